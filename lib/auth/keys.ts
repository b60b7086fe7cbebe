/**
 * Where token signing keys come from: SKIFF_TOKEN_KEYS locally, or an SSM Parameter Store
 * SecureString when deployed (SKIFF_TOKEN_KEYS_PARAMETER; see serverless.yml). The parameter is
 * read again every few minutes, so a rotation (add the new key first, drop the old one after a
 * token lifetime) reaches every running function without a redeploy.
 */
import { TokenService, type TokenSettings, parseKeys } from './tokens.js';

export interface KeySource {
  keys?: string;
  parameter?: string;
  region: string;
  refreshMs?: number;
}

export function tokenServiceProvider(source: KeySource, settings: TokenSettings): () => Promise<TokenService> {
  if (source.keys) {
    const service = new TokenService(parseKeys(source.keys), settings);
    return async () => service;
  }
  if (!source.parameter) throw new Error('token keys are not configured');
  const parameter = source.parameter;
  let current: { service: TokenService; until: number } | undefined;
  let loading: Promise<TokenService> | undefined;
  return () => {
    if (current && current.until > Date.now()) return Promise.resolve(current.service);
    loading ??= (async () => {
      try {
        // Loaded on first use, so the SSM client stays out of the cold start.
        const { SSMClient, GetParameterCommand } = await import('@aws-sdk/client-ssm');
        const res = await new SSMClient({ region: source.region }).send(new GetParameterCommand({ Name: parameter, WithDecryption: true }));
        const service = new TokenService(parseKeys(res.Parameter?.Value ?? ''), settings);
        current = { service, until: Date.now() + (source.refreshMs ?? 5 * 60_000) };
        return service;
      } finally {
        loading = undefined;
      }
    })();
    return loading;
  };
}
