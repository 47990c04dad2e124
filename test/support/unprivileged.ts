// Running the CLI as unprivileged users, for the tests of least privilege and of who may use the API
// socket: test users created for this process (removed again at the end, and only those), a copy of the
// package's runtime files that any user can read (the checkout itself may sit in a directory only root
// can enter), and setpriv (util-linux) to start a process as a user with exactly the capabilities named.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ADDON, FRONTEND_ADDON, ROOT } from './helpers';

export interface TestUser {
  name: string;
  uid: number;
  gid: number;
}

/** A system user (and its own group) named for this process, created now; remove() deletes both. */
export function createUser(tag: string): TestUser & { remove: () => void } {
  const name = `vw${tag}${process.pid}`.slice(0, 32);
  if (spawnSync('getent', ['passwd', name]).status === 0) throw new Error(`user ${name} exists already: not ours to use or remove`);
  execFileSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', '--user-group', name]);
  const [, , uid, gid] = execFileSync('getent', ['passwd', name], { encoding: 'utf8' }).trim().split(':');
  return { name, uid: Number(uid), gid: Number(gid), remove: () => void spawnSync('userdel', [name], { stdio: 'ignore' }) };
}

/** Why `file` cannot be run by users other than root (an ancestor they cannot enter), or null. */
export function unreachableByOthers(file: string): string | null {
  for (let p = path.resolve(file); ; p = path.dirname(p)) {
    const mode = fs.statSync(p).mode;
    const need = p === path.resolve(file) ? 0o005 : 0o001;
    if ((mode & need) !== need) return `${p} is mode ${(mode & 0o777).toString(8)}`;
    if (p === '/') return null;
  }
}

/**
 * The files `node bin/vhostwire.js` needs at run time (bin/, dist/src/, both addons, the production
 * dependencies), copied under a fresh world-readable directory. Returns the copy's bin/vhostwire.js.
 */
export function runtimeCopy(): { bin: string; dir: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostwire-runtime-'));
  fs.chmodSync(dir, 0o755);
  const copy = (rel: string): void => fs.cpSync(path.join(ROOT, rel), path.join(dir, rel), { recursive: true });
  for (const rel of ['package.json', 'bin', path.join('dist', 'src'), path.relative(ROOT, ADDON), path.relative(ROOT, FRONTEND_ADDON)])
    copy(rel);
  const deps = execFileSync('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: ROOT, encoding: 'utf8' })
    .split('\n')
    .filter((p) => p.startsWith(path.join(ROOT, 'node_modules') + path.sep));
  for (const p of deps) copy(path.relative(ROOT, p));
  execFileSync('chmod', ['-R', 'a+rX', dir]);
  return { bin: path.join(dir, 'bin', 'vhostwire.js'), dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/**
 * A launcher prefix that removes the test runner's hook: tap preloads a module into every node child
 * (NODE_OPTIONS, re-added by its wrapped spawn) that writes into the checkout at exit, which a process
 * that is or becomes another user may not do. env execs in place: the pid stays the program's.
 */
export const WITHOUT_TEST_HOOKS = ['env', '-u', 'NODE_OPTIONS'];

export interface RunAs {
  uid: number;
  gid: number;
  /** supplementary groups; default: none */
  groups?: number[];
  /** capabilities the process starts with (inheritable, ambient and bounding set), e.g. ['net_raw'] */
  caps?: string[];
}

/** setpriv's arguments for starting a program with exactly these credentials. */
export function setprivArgs(as: RunAs): string[] {
  const caps = ['-all', ...(as.caps ?? []).map((c) => `+${c}`)].join(',');
  return [
    `--reuid=${as.uid}`,
    `--regid=${as.gid}`,
    ...(as.groups?.length ? [`--groups=${as.groups.join(',')}`] : ['--clear-groups']),
    `--inh-caps=${caps}`,
    `--ambient-caps=${caps}`,
    `--bounding-set=${caps}`,
    '--',
  ];
}
