// Users and groups named on the command line (serve --user, --api-owner), resolved to numbers once, at
// start, through the system's name service (getent: /etc/passwd and /etc/group, or LDAP, systemd's
// dynamic users...), as setpriv and systemd resolve theirs. Numbers are accepted as they are.
import { spawnSync } from 'node:child_process';

export interface Account {
  /** as given, or the number when given as one */
  name: string;
  uid: number;
  gid: number;
  /** supplementary groups, the primary group included */
  groups: number[];
}

const NAME_RE = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/;
const ID_RE = /^(0|[1-9][0-9]{0,9})$/;

/** getent DATABASE KEY: the fields of the entry, or null when there is none. */
function getent(database: 'passwd' | 'group' | 'initgroups', key: string): string[] | null {
  const r = spawnSync('getent', [database, key], { encoding: 'utf8' });
  if (r.error) throw new Error(`cannot run getent to look up ${key}: ${r.error.message}`);
  if (r.status !== 0) return null;
  const line = r.stdout.split('\n')[0];
  return database === 'initgroups' ? line.trim().split(/\s+/) : line.split(':');
}

/** Why `text` is no user or group name, or null. */
function badName(text: string): string | null {
  return ID_RE.test(text) || NAME_RE.test(text) ? null : `"${text}" is neither a name nor a number`;
}

/** A group by name or number; throws a message (without the flag) when there is none. */
export function lookupGroup(text: string): number {
  const bad = badName(text);
  if (bad) throw new Error(bad);
  const g = getent('group', text);
  if (g) return Number(g[2]);
  if (ID_RE.test(text)) return Number(text);
  throw new Error(`no group named "${text}" (getent group ${text} found nothing)`);
}

/**
 * USER[:GROUP]: the user's uid, and GROUP (default: the user's primary group) with the user's
 * supplementary groups, as login and systemd's User= would give them. A number without an entry is
 * a user with no supplementary groups; it then needs GROUP, or its number is taken as the group too.
 */
export function lookupAccount(text: string): Account {
  const [user, group, ...rest] = text.split(':');
  if (rest.length > 0 || user === '' || group === '') throw new Error('expected USER or USER:GROUP');
  const bad = badName(user);
  if (bad) throw new Error(bad);
  const pw = getent('passwd', user);
  if (!pw && !ID_RE.test(user)) throw new Error(`no user named "${user}" (getent passwd ${user} found nothing)`);
  const uid = pw ? Number(pw[2]) : Number(user);
  const gid = group !== undefined ? lookupGroup(group) : pw ? Number(pw[3]) : uid;
  // getent initgroups lists the groups the user is a member of, without the primary group.
  const member = pw ? (getent('initgroups', pw[0]) ?? []).slice(1).map(Number) : [];
  return { name: user, uid, gid, groups: [...new Set([gid, ...member])] };
}
