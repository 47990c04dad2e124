// Drives `vhostwire serve` as a child process (`node bin/vhostwire.js serve ...`, never through npx, so
// the pid we signal is the backend's own) and reads its counters over HTTP: GET /metrics (Prometheus
// text) and GET /api/ports (JSON).
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';

/** The package root (this file runs as dist/bench/serve.js). */
export const ROOT = path.resolve(__dirname, '..', '..');
export const BIN = path.join(ROOT, 'bin', 'vhostwire.js');

/** Why `vhostwire serve` cannot run from this tree, or null when the addon and the CLI are built. */
export function serveUnavailable(): string | null {
  const missing = [path.join(ROOT, 'build', 'Release', 'vhostwire.node'), path.join(ROOT, 'dist', 'src', 'cli', 'main.js')].filter(
    (f) => !fs.existsSync(f),
  );
  return missing.length ? `not built: ${missing.map((f) => path.relative(ROOT, f)).join(', ')} missing` : null;
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses Prometheus text exposition format (comments skipped). */
export function parsePrometheus(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    if (m[2]) for (const l of m[2].matchAll(/([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2].replace(/\\(.)/g, '$1');
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

/** Sum of the samples of one metric whose labels include all of `match`. */
export function metric(samples: Sample[], name: string, match: Record<string, string> = {}): number {
  let sum = 0;
  for (const s of samples) {
    if (s.name !== name) continue;
    if (Object.entries(match).every(([k, v]) => s.labels[k] === v)) sum += s.value;
  }
  return sum;
}

/** A TCP port nobody listens on right now (127.0.0.1). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

export function httpGet(url: string, timeoutMs = 3000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: timeoutMs, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', reject);
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface ApiPort {
  name: string;
  kind: string;
  state: string;
  queuePairs: number;
  peer: string;
  pmd: number;
  queuePmds: number[];
  connected?: boolean;
  counters: Array<Record<string, number>>;
}

export interface ServeOptions {
  /** serve's flags without --metrics (added here on a free port) */
  args: string[];
  log?: (line: string) => void;
  startTimeoutMs?: number;
}

export class ServeProcess {
  readonly url: string;
  readonly args: string[];
  #child: ChildProcess;
  #out = '';
  #exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #exited: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  #suspended = false;

  private constructor(args: string[], port: number, log?: (line: string) => void) {
    this.url = `http://127.0.0.1:${port}`;
    this.args = ['serve', ...args, '--metrics', `127.0.0.1:${port}`];
    this.#child = spawn(process.execPath, [BIN, ...this.args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    const onData = (s: string): void => {
      this.#out += s;
      if (this.#out.length > 1 << 20) this.#out = this.#out.slice(-(1 << 19));
      if (log) for (const l of s.split('\n')) if (l) log(l);
    };
    this.#child.stdout!.setEncoding('utf8').on('data', onData);
    this.#child.stderr!.setEncoding('utf8').on('data', onData);
    this.#exit = new Promise((resolve) => {
      this.#child.once('exit', (code, signal) => {
        this.#exited = { code, signal };
        resolve({ code, signal });
      });
      this.#child.once('error', () => {
        this.#exited = { code: null, signal: null };
        resolve({ code: null, signal: null });
      });
    });
  }

  /** Spawns serve and waits until GET /api/ports answers. */
  static async start(opts: ServeOptions): Promise<ServeProcess> {
    const port = await freePort();
    const s = new ServeProcess(opts.args, port, opts.log);
    const deadline = Date.now() + (opts.startTimeoutMs ?? 15000);
    for (;;) {
      if (s.#exited) throw s.error(`exited (${s.#exited.signal ?? `code ${s.#exited.code}`}) during startup`);
      try {
        const r = await httpGet(`${s.url}/api/ports`, 1000);
        if (r.status === 200) return s;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        await s.stop();
        throw s.error('did not answer GET /api/ports in time');
      }
      await sleep(50);
    }
  }

  get pid(): number {
    return this.#child.pid ?? -1;
  }

  output(): string {
    return this.#out;
  }

  error(what: string): Error {
    const tail = this.#out.split('\n').slice(-20).join('\n');
    return new Error(`vhostwire ${this.args.join(' ')} (pid ${this.pid}) ${what}\n--- output ---\n${tail}`);
  }

  async metrics(): Promise<Sample[]> {
    const r = await httpGet(`${this.url}/metrics`);
    if (r.status !== 200) throw this.error(`GET /metrics answered ${r.status}`);
    return parsePrometheus(r.body);
  }

  async ports(): Promise<ApiPort[]> {
    const r = await httpGet(`${this.url}/api/ports`);
    if (r.status !== 200) throw this.error(`GET /api/ports answered ${r.status}`);
    return JSON.parse(r.body) as ApiPort[];
  }

  /** Waits until the named vhost-user port reports a connected front end. */
  async waitConnected(name: string, timeoutMs = 10000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const p = (await this.ports()).find((x) => x.name === name);
      if (p && (p.state === 'connected' || p.connected === true)) return;
      if (Date.now() > deadline) throw this.error(`port ${name} did not report a connected front end within ${timeoutMs} ms`);
      await sleep(50);
    }
  }

  /** SIGSTOP by pid: freezes serve, PMD threads included (the benchmark pauses a busy-polling rig). */
  suspend(): void {
    if (!this.#exited && this.pid > 0) process.kill(this.pid, 'SIGSTOP');
    this.#suspended = true;
  }

  /** SIGCONT by pid: undoes suspend(). */
  continue(): void {
    if (!this.#exited && this.pid > 0) process.kill(this.pid, 'SIGCONT');
    this.#suspended = false;
  }

  /**
   * Ends serve by pid: `signal` (SIGTERM by default), then SIGKILL after graceMs. Resolves with how it
   * exited. Idempotent.
   */
  async stop(
    signal: NodeJS.Signals = 'SIGTERM',
    graceMs = 8000,
  ): Promise<{ code: number | null; signal: NodeJS.Signals | null; killed: boolean }> {
    let killed = false;
    if (!this.#exited && this.pid > 0) {
      try {
        // A stopped process would keep the signal pending until continued.
        if (this.#suspended) this.continue();
        process.kill(this.pid, signal);
      } catch {
        // already gone
      }
      const done = await Promise.race([this.#exit.then(() => true), sleep(graceMs).then(() => false)]);
      if (!done) {
        killed = true;
        try {
          process.kill(this.pid, 'SIGKILL');
        } catch {
          // already gone
        }
        await this.#exit;
      }
    }
    const e = await this.#exit;
    return { ...e, killed };
  }
}
