// A private Open vSwitch with DPDK for the benchmarks that compare with it (bench/g2g.ts, bench/tcp.ts):
// ovsdb-server and ovs-vswitchd-dpdk in a directory of their own, no systemd, DPDK on core 0 and the
// PMD on core 1 (docs: /work/shared/notes/environment.md), stopped by the pids in their pid files.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { sleep } from './serve';

export const OVS_VSWITCHD = '/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk';

function which(bin: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;
}

/** Why OVS-DPDK cannot run here, or null. */
export function ovsUnavailable(): string | null {
  return fs.existsSync(OVS_VSWITCHD) && which('ovsdb-server') && which('ovs-vsctl')
    ? null
    : 'Open vSwitch with DPDK is not installed (Debian 12: openvswitch-switch-dpdk)';
}

/** The pid a daemon wrote to its pid file, or null when there is none. */
function pidIn(file: string): number | null {
  const pid = Number(fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim() : NaN);
  return Number.isInteger(pid) && pid > 0 ? pid : null;
}

export class Ovs {
  readonly dir: string;
  private readonly env: NodeJS.ProcessEnv;
  private readonly pids: string[] = [];

  private constructor() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostwire-ovs-'));
    this.env = { ...process.env, OVS_RUNDIR: this.dir, OVS_LOGDIR: this.dir, OVS_DBDIR: this.dir };
  }

  run(cmd: string, args: string[]): string {
    return execFileSync(cmd, args, { env: this.env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  }

  vsctl(...args: string[]): string {
    return this.run('ovs-vsctl', [`--db=unix:${this.dir}/db.sock`, '--timeout=30', ...args]);
  }

  appctl(...args: string[]): string {
    return this.run('ovs-appctl', [`--target=${this.dir}/vswitchd.ctl`, ...args]);
  }

  /** Starts both daemons, then setup (bridges, ports); on any failure stops them and says why, with the log's tail. */
  static async start(setup: (ovs: Ovs) => void): Promise<Ovs> {
    const o = new Ovs();
    const dir = o.dir;
    try {
      o.run('ovsdb-tool', ['create', `${dir}/conf.db`, '/usr/share/openvswitch/vswitch.ovsschema']);
      o.run('ovsdb-server', [
        `--remote=punix:${dir}/db.sock`,
        `--pidfile=${dir}/ovsdb-server.pid`,
        '--detach',
        `--log-file=${dir}/ovsdb-server.log`,
        `${dir}/conf.db`,
      ]);
      o.pids.push(`${dir}/ovsdb-server.pid`);
      o.vsctl('--no-wait', 'init');
      o.vsctl(
        '--no-wait',
        'set',
        'Open_vSwitch',
        '.',
        'other_config:dpdk-init=true',
        'other_config:dpdk-lcore-mask=0x1',
        'other_config:pmd-cpu-mask=0x2',
        'other_config:dpdk-socket-mem=512',
        `other_config:dpdk-extra=--no-pci --file-prefix=ovs${process.pid}`,
      );
      o.run(OVS_VSWITCHD, [
        `unix:${dir}/db.sock`,
        `--pidfile=${dir}/ovs-vswitchd.pid`,
        `--unixctl=${dir}/vswitchd.ctl`,
        '--detach',
        `--log-file=${dir}/vswitchd.log`,
      ]);
      o.pids.push(`${dir}/ovs-vswitchd.pid`);
      setup(o);
    } catch (e) {
      const logTail = fs.existsSync(`${dir}/vswitchd.log`)
        ? fs.readFileSync(`${dir}/vswitchd.log`, 'utf8').split('\n').slice(-10).join('\n')
        : '';
      await o.close();
      throw new Error(`Open vSwitch did not start: ${e instanceof Error ? e.message : String(e)}\n${logTail}`);
    }
    return o;
  }

  private vswitchdPid(): number | null {
    return pidIn(`${this.dir}/ovs-vswitchd.pid`);
  }

  /** SIGSTOP to ovs-vswitchd by pid: its busy-polling PMD leaves core 1 to whichever rig runs now. */
  suspend(): void {
    const pid = this.vswitchdPid();
    if (pid) process.kill(pid, 'SIGSTOP');
  }

  /** SIGCONT: undoes suspend(). */
  continue(): void {
    const pid = this.vswitchdPid();
    if (pid) process.kill(pid, 'SIGCONT');
  }

  async close(): Promise<void> {
    // A stopped vswitchd would hold SIGTERM until the end of the grace period.
    try {
      this.continue();
    } catch {
      // gone
    }
    for (const f of this.pids.reverse()) {
      const pid = pidIn(f);
      if (pid === null) continue;
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        continue;
      }
      for (let i = 0; i < 100; i++) {
        try {
          process.kill(pid, 0);
        } catch {
          break;
        }
        await sleep(50);
      }
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    this.pids.length = 0;
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
