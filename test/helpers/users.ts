/**
 * Users for a registry process's table (spawnRegistry), put there as the admin tool would.
 */
import { hashPassword } from '../../lib/auth/passwords.js';
import { createDocumentClient } from '../../lib/metadata/dynamo/table.js';
import { DynamoUserStore } from '../../lib/metadata/dynamo/users.js';

/** Adds `name` with `password` and pull and push on `pattern` to the table `env` names. */
export async function addUser(env: Record<string, string>, name: string, password: string, pattern: string): Promise<void> {
  const db = createDocumentClient({ table: env.DYNAMODB_TABLE!, region: 'us-east-1', endpoint: env.DYNAMODB_ENDPOINT!, credentials: { accessKeyId: 'local', secretAccessKey: 'local' } });
  const users = new DynamoUserStore(db, env.DYNAMODB_TABLE!);
  const now = Date.now();
  await users.putUser({ name, passwordHash: await hashPassword(password), createdAt: now, updatedAt: now });
  await users.putGrant(name, { pattern, actions: ['pull', 'push'] });
}
