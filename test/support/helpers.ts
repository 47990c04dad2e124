// Shared helpers for tests that run the real CLI: temporary socket directories, spawning
// `node bin/vhostwire.js` (never through npx, so the pid we signal is the backend's own) and waiting
// for conditions with a deadline.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

// dist/test/support/helpers.js -> package root
export const ROOT = path.resolve(__dirname, '..', '..', '..');
export const BIN = path.join(ROOT, 'bin', 'vhostwire.js');
export const ADDON = path.join(ROOT, 'build', 'Release', 'vhostwire.node');
/** The test front end's addon: the peer command needs it. */
export const FRONTEND_ADDON = path.join(ROOT, 'build', 'Release', 'vhostwire_frontend.node');

/** A fresh directory under os.tmpdir() for socket files; removed by the returned cleanup. */
export function tempDir(prefix = 'vhostwire-test-'): { dir: string; sock: (name: string) => string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return {
    dir,
    sock: (name) => path.join(dir, `${name}.sock`),
    cleanup: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}

/** Polls cond (sync or async) every 20 ms until it is true or the deadline passes. */
export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

// One implementation of "a free TCP port on 127.0.0.1", shared with the benchmarks.
export { freePort } from '../../bench/serve';

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** How a Cli starts: through a launcher that execs node in place (setpriv), from another copy of bin/. */
export interface Launch {
  prefix?: string[];
  bin?: string;
}

/** A running `node bin/vhostwire.js ...` with its output collected. */
export class Cli {
  readonly child: ChildProcess;
  readonly pid: number;
  stdout = '';
  stderr = '';
  readonly exited: Promise<Exit>;
  #exit: Exit | undefined;

  constructor(args: string[], launch: Launch = {}) {
    const [command, ...rest] = [...(launch.prefix ?? []), process.execPath, launch.bin ?? BIN, ...args];
    const cwd = launch.bin === undefined ? ROOT : path.dirname(path.dirname(launch.bin));
    this.child = spawn(command, rest, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    if (this.child.pid === undefined) throw new Error(`could not spawn ${BIN}`);
    this.pid = this.child.pid;
    this.child.stdout!.setEncoding('utf8').on('data', (d: string) => (this.stdout += d));
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    this.exited = new Promise((resolve) =>
      this.child.on('close', (code, signal) => {
        this.#exit = { code, signal };
        resolve(this.#exit);
      }),
    );
  }

  get running(): boolean {
    return this.#exit === undefined;
  }

  /** Waits for a line of stdout matching re; fails early if the process exits first. */
  async line(re: RegExp, timeoutMs = 10000): Promise<RegExpMatchArray> {
    let m: RegExpMatchArray | undefined;
    await waitFor(
      `a line matching ${re} (stdout so far: ${JSON.stringify(this.stdout)})`,
      () => {
        m = this.stdout
          .split('\n')
          .map((l) => l.match(re))
          .find((x): x is RegExpMatchArray => x !== null);
        if (!m && !this.running)
          throw new Error(
            `exited ${JSON.stringify(this.#exit)} before printing ${re}; stdout ${JSON.stringify(this.stdout)} stderr ${JSON.stringify(this.stderr)}`,
          );
        return m !== undefined;
      },
      timeoutMs,
    );
    return m!;
  }

  /** Sends a signal to the pid we started (not a process group, not by name). The child may be reaped
   * before 'close' fires (its pipes drain later), so ChildProcess.kill, which treats a gone child as done,
   * rather than process.kill, which throws ESRCH. */
  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (this.running && this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
  }

  /** Waits for exit; SIGKILLs the process if it does not exit in time. */
  async wait(timeoutMs = 10000): Promise<Exit> {
    const timer = setTimeout(() => this.kill('SIGKILL'), timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Runs the CLI to completion. */
export async function runCli(args: string[], timeoutMs = 20000, launch?: Launch): Promise<Exit & { stdout: string; stderr: string }> {
  const cli = new Cli(args, launch);
  const exit = await cli.wait(timeoutMs);
  return { ...exit, stdout: cli.stdout, stderr: cli.stderr };
}

/** The value of one Prometheus sample line, or undefined. */
export function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}
