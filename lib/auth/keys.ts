/**
 * Where token signing keys come from: SKIFF_TOKEN_KEYS locally, or an SSM Parameter Store
 * SecureString when deployed (SKIFF_TOKEN_KEYS_PARAMETER; see serverless.yml). The parameter is
 * read again every few minutes, so a rotation (add the new key first, drop the old one after a
 * token lifetime) reaches every running function without a redeploy. A failed re-read keeps the
 * keys already known rather than failing requests.
 */
import { TokenService, type TokenSettings, parseKeys } from './tokens.js';

export interface KeySource {
  keys?: string;
  parameter?: string;
  region: string;
  refreshMs?: number;
}

export type ParameterReader = (name: string, region: string) => Promise<string>;

/**
 * Reads a SecureString; the SSM client is loaded on first use, outside the cold start, and then
 * kept for every later refresh (one per region).
 */
const ssmClients = new Map<string, Promise<{ client: import('@aws-sdk/client-ssm').SSMClient; Get: typeof import('@aws-sdk/client-ssm').GetParameterCommand }>>();
export const readSsmParameter: ParameterReader = async (name, region) => {
  if (!ssmClients.has(region)) {
    ssmClients.set(
      region,
      import('@aws-sdk/client-ssm').then(({ SSMClient, GetParameterCommand }) => ({ client: new SSMClient({ region }), Get: GetParameterCommand })),
    );
    ssmClients.get(region)!.catch(() => ssmClients.delete(region)); // a failed load is tried again
  }
  const { client, Get } = await ssmClients.get(region)!;
  const res = await client.send(new Get({ Name: name, WithDecryption: true }));
  return res.Parameter?.Value ?? '';
};

export function tokenServiceProvider(source: KeySource, settings: TokenSettings, read: ParameterReader = readSsmParameter, now: () => number = Date.now): () => Promise<TokenService> {
  if (source.keys) {
    const service = new TokenService(parseKeys(source.keys), settings);
    return async () => service;
  }
  if (!source.parameter) throw new Error('token keys are not configured');
  const parameter = source.parameter;
  const refreshMs = source.refreshMs ?? 5 * 60_000;
  let current: { service: TokenService; until: number } | undefined;
  let loading: Promise<TokenService> | undefined;
  return () => {
    if (current && current.until > now()) return Promise.resolve(current.service);
    loading ??= (async () => {
      try {
        const service = new TokenService(parseKeys(await read(parameter, source.region)), settings);
        current = { service, until: now() + refreshMs };
        return service;
      } catch (err) {
        if (!current) throw err;
        current.until = now() + Math.min(refreshMs, 30_000); // try again soon
        return current.service;
      } finally {
        loading = undefined;
      }
    })();
    return loading;
  };
}
