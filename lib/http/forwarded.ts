/**
 * Who sent a request, and under which URL they reached us. The forwarding headers
 * (X-Forwarded-For, -Host, -Proto) are anyone's to write, so they are believed only when the
 * peer is a proxy the operator named (SKIFF_TRUSTED_PROXIES); otherwise the client is the peer
 * itself (the socket's address, or API Gateway's sourceIp, which is already the client) and the
 * URL is the Host the client asked for, over plain HTTP.
 */
import { BlockList, isIP } from 'node:net';
import type { RegistryRequest } from './types.js';

export class TrustedProxies {
  private readonly list = new BlockList();
  private readonly empty: boolean;

  /** `cidrs` as validated by the configuration (addresses or address/prefix). */
  constructor(cidrs: string[]) {
    this.empty = cidrs.length === 0;
    for (const cidr of cidrs) {
      const [address, prefix] = cidr.split('/');
      const type = isIP(address!) === 6 ? 'ipv6' : 'ipv4';
      if (prefix === undefined) this.list.addAddress(address!, type);
      else this.list.addSubnet(address!, Number(prefix), type);
    }
  }

  trusts(address: string | undefined): boolean {
    if (this.empty || !address) return false;
    const family = isIP(address);
    return family !== 0 && this.list.check(address, family === 6 ? 'ipv6' : 'ipv4');
  }
}

export interface ClientView {
  /** The client's address, for counting its failed logins. */
  source?: string;
  /** The scheme and host the client reached us by, for the token realm. */
  proto: string;
  host: string;
}

export function clientView(req: RegistryRequest, proxies: TrustedProxies): ClientView {
  const peer = plain(req.sourceIp);
  const host = req.headers['host'] ?? 'localhost';
  if (!proxies.trusts(peer)) return { source: peer, proto: 'http', host };
  // X-Forwarded-For lists the hops in order, each proxy appending its peer: from the right, the
  // first address that is not one of our proxies is the client; what lies left of it is the
  // client's own claim.
  let source = peer!;
  const hops = (req.headers['x-forwarded-for'] ?? '').split(',').map((h) => plain(h.trim()));
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = hops[i];
    if (!hop || !isIP(hop)) break;
    source = hop;
    if (!proxies.trusts(hop)) break;
  }
  const proto = first(req.headers['x-forwarded-proto'])?.toLowerCase();
  return { source, proto: proto === 'https' || proto === 'http' ? proto : 'http', host: first(req.headers['x-forwarded-host']) || host };
}

function first(header: string | undefined): string | undefined {
  return header?.split(',')[0]!.trim();
}

/** An IPv4 address as itself, not IPv4-mapped IPv6 (a dual-stack socket reports `::ffff:a.b.c.d`). */
function plain(address: string | undefined): string | undefined {
  return address?.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}
