/**
 * `npm run admin -- <command>`: the skiff-admin tool against the table the environment names
 * (DYNAMODB_TABLE, DYNAMODB_ENDPOINT, AWS_REGION, as for the registry). For the embedded
 * default of `npm start`, point it at that DynamoDB Local: DYNAMODB_ENDPOINT=http://127.0.0.1:5002.
 */
import { ConfigError, loadConfig } from '../config.js';
import { DynamoCollectorStore } from '../metadata/dynamo/gc.js';
import { DynamoManifestIndex } from '../metadata/dynamo/manifests.js';
import { DynamoOrphanStore } from '../metadata/dynamo/orphans.js';
import { DynamoPolicyStore } from '../metadata/dynamo/policies.js';
import { DynamoUserStore } from '../metadata/dynamo/users.js';
import { collectGarbage } from '../registry/gc.js';
import { applyRetention } from '../registry/retention.js';
import { createDynamo, createStorage } from '../registry/index.js';
import { type Io, run } from './cli.js';

const io: Io = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
  readSecret: (prompt) => (process.stdin.isTTY ? readHidden(prompt) : readLine()),
};

/** From a terminal: raw mode, nothing echoed. */
function readHidden(prompt: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const stdin = process.stdin;
    process.stderr.write(prompt);
    let value = '';
    stdin.setRawMode(true);
    stdin.resume();
    stdin.setEncoding('utf8');
    const onData = (ch: string) => {
      for (const c of ch) {
        if (c === '\r' || c === '\n') return done(undefined);
        if (c === '\u0003') return done(new Error('cancelled'));
        if (c === '\u007f') value = value.slice(0, -1);
        else value += c;
      }
    };
    const done = (err: Error | undefined) => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.off('data', onData);
      process.stderr.write('\n');
      if (err) reject(err);
      else resolve(value);
    };
    stdin.on('data', onData);
  });
}

/** From a pipe: the first line, which must be UTF-8 (invalid bytes are refused, not replaced). */
async function readLine(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) {
    chunks.push(chunk as Buffer);
    if ((chunk as Buffer).includes(0x0a)) break;
  }
  return new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks)).split(/\r?\n/)[0]!;
}

async function main(): Promise<number> {
  let config;
  try {
    config = loadConfig({ ...process.env, SKIFF_AUTH: 'open' });
  } catch (err) {
    if (err instanceof ConfigError) {
      io.err(`skiff-admin: configuration error: ${err.message}`);
      return 1;
    }
    throw err;
  }
  const users = () => new DynamoUserStore(createDynamo(config), config.dynamo.table);
  const collect = (options: Parameters<typeof collectGarbage>[2]) =>
    collectGarbage(new DynamoCollectorStore(createDynamo(config), config.dynamo.table), createStorage(config), {
      ...options,
      orphans: new DynamoOrphanStore(createDynamo(config), config.dynamo.table),
    });
  const policies = () => new DynamoPolicyStore(createDynamo(config), config.dynamo.table);
  const retain = (options: Parameters<typeof applyRetention>[1]) =>
    applyRetention({ manifests: new DynamoManifestIndex(createDynamo(config), config.dynamo.table), policies: policies(), storage: createStorage(config) }, options);
  return run(process.argv.slice(2), users, io, collect, { policies, retain });
}

main().then((code) => process.exit(code));
