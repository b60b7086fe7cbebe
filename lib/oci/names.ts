/**
 * Repository names and tags, validated against the distribution-spec v1.1 grammars.
 */
import { RegistryError } from './errors.js';

const COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const NAME = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
const TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;

/** Clients limit host + "/" + name to 255 characters; 255 for the name alone is our ceiling. */
export const MAX_NAME_LENGTH = 255;

export function isValidName(name: string): boolean {
  return name.length <= MAX_NAME_LENGTH && NAME.test(name);
}

export function assertName(name: string): string {
  if (!isValidName(name)) {
    throw new RegistryError('NAME_INVALID', 'invalid repository name', {
      detail: { name, rule: `path components matching ${COMPONENT} separated by "/", at most ${MAX_NAME_LENGTH} characters` },
    });
  }
  return name;
}

export function isValidTag(tag: string): boolean {
  return TAG.test(tag);
}
