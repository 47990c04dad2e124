// Fixtures for tests that run dpdk-testpmd against `vhostwire serve`: each helper starts a real process
// and registers its cleanup with the test (processes ended by pid, sockets and DPDK runtime dirs removed).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Test } from 'tap';
import { Testpmd, type TestpmdOptions } from '../../bench/testpmd';
import { ServeProcess, sleep } from '../../bench/serve';

let n = 0;
/** A socket path of our own under the temp dir; removed when the test ends. */
export function tmpSocket(t: Test, name: string): string {
  const p = path.join(os.tmpdir(), `vhostwire-dpdk-${process.pid}-${++n}-${name}.sock`);
  fs.rmSync(p, { force: true });
  t.teardown(() => fs.rmSync(p, { force: true }));
  return p;
}

/** `node bin/vhostwire.js serve ARGS --metrics 127.0.0.1:<free port>`; SIGTERMed at teardown if still running. */
export async function startServe(t: Test, args: string[]): Promise<ServeProcess> {
  const s = await ServeProcess.start({ args, log: process.env.VHOSTWIRE_TEST_VERBOSE ? (l) => t.comment(`serve: ${l}`) : undefined });
  t.teardown(async () => {
    await s.stop();
  });
  return s;
}

/**
 * A dpdk-testpmd with a net_virtio_user vdev, placed as the benchmark places its front end (-l 0,1
 * --main-lcore 1: it forwards on core 0). Closed at teardown if still running.
 */
export async function startVirtioUser(
  t: Test,
  opts: {
    path: string;
    forwardMode: TestpmdOptions['forwardMode'];
    txpkts?: number;
    vdevExtra?: string;
    extraApp?: string[];
    /** queue pairs of the port (and testpmd's --rxq/--txq); default 1 */
    queues?: number;
  },
): Promise<Testpmd> {
  const tp = await Testpmd.start({
    name: 'virtio-user',
    lcores: '0,1',
    mainLcore: 1,
    vdev: `net_virtio_user0,path=${opts.path},queues=${opts.queues ?? 1}${opts.vdevExtra ? `,${opts.vdevExtra}` : ''}`,
    singleFileSegments: true,
    memMb: 128,
    mbufs: 8192,
    forwardMode: opts.forwardMode,
    txpkts: opts.txpkts,
    extraApp: [...(opts.queues ? [`--rxq=${opts.queues}`, `--txq=${opts.queues}`] : []), ...(opts.extraApp ?? [])],
    // Well inside the tests' own timeouts, so a start that hangs fails with testpmd's last output.
    startTimeoutMs: 20000,
    log: process.env.VHOSTWIRE_TEST_VERBOSE ? (l) => t.comment(`testpmd: ${l}`) : undefined,
  });
  t.teardown(async () => {
    await tp.close();
  });
  return tp;
}

/** Polls fn until it returns true; resolves false at the deadline. */
export async function waitUntil(fn: () => Promise<boolean>, timeoutMs: number, everyMs = 50): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await fn()) return true;
    if (Date.now() > deadline) return false;
    await sleep(everyMs);
  }
}
