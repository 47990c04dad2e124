// Ours and the kernel's counters for an uplink on a veth pair agree within the differences docs/metrics.md
// ("Ours and the kernel's") lists, in both modes, and `stats` shows the difference with its cause. The
// host end of the pair is made for the test (its counters start at 0 with our port's) and carries no
// other traffic (no address, no IPv6), so the totals must agree exactly: a gen's 5,000 frames out are
// the interface's tx_packets and the far end's rx_packets; frames flooded in while serve is stopped are
// the interface's rx_packets, each either received by us or dropped by the kernel at our full ring
// (packet_drops, xdp_rx_dropped; in bypass mode the veth counts the same frames in its rx_dropped).
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { Cli, freePort, waitFor } from '../support/helpers';
import { parseScrape, total } from '../support/metrics';

const skip = process.getuid?.() === 0 ? false : 'needs root: network namespaces, veth pairs, AF_PACKET and AF_XDP sockets';

const ip = (...args: string[]): string => execFileSync('ip', args, { encoding: 'utf8' });

interface LinkStats {
  rx: { packets: number; dropped: number };
  tx: { packets: number; dropped: number };
}
/** An interface's counters; `ns` for one in a namespace. */
const linkStats = (dev: string, ns?: string): LinkStats =>
  (JSON.parse(ip(...(ns ? ['-n', ns] : []), '-s', '-j', 'link', 'show', 'dev', dev)) as Array<{ stats64: LinkStats }>)[0].stats64;

interface Difference {
  frames: number;
  causes: Record<string, number>;
  unexplained: number;
}
interface JsonSample {
  ports: Array<{ name: string; kernel?: { difference: { rx: Difference; tx: Difference } } }>;
}

for (const mode of ['kernel', 'bypass'] as const)
  t.test(`${mode} mode: ours and the kernel's counters agree on a veth pair`, { skip }, async (t) => {
    const ns = `vwc${process.pid}`;
    const host = `vwch${process.pid}`;
    const peer = `vwcp${process.pid}`;
    ip('netns', 'add', ns);
    t.teardown(() => {
      spawnSync('ip', ['link', 'del', host], { stdio: 'ignore' });
      spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    });
    ip('link', 'add', host, 'type', 'veth', 'peer', 'name', peer, 'netns', ns);
    execFileSync('sysctl', ['-qw', `net.ipv6.conf.${host}.disable_ipv6=1`]);
    ip('netns', 'exec', ns, 'sysctl', '-qw', `net.ipv6.conf.${peer}.disable_ipv6=1`);
    ip('-n', ns, 'link', 'set', peer, 'up');
    ip('link', 'set', host, 'up');

    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const serve = new Cli([
      'serve',
      ...['--uplink', `up0=${host}`, '--gen', 'g0,size=100,count=5000,rate=20000', '--wire', 'g0=up0'],
      ...['--mode', mode, '--metrics', `127.0.0.1:${port}`],
    ]);
    let stopped = false;
    t.teardown(() => {
      if (stopped) process.kill(serve.pid, 'SIGCONT');
      serve.kill('SIGKILL');
    });
    await serve.line(/^ready$/);
    const json = new Cli(['stats', '--url', url, '--json', '--watch', '0.5']);
    const text = new Cli(['stats', '--url', url, '--watch', '0.5', '--port', 'up0']);
    t.teardown(() => {
      json.kill('SIGKILL');
      text.kill('SIGKILL');
    });
    await waitFor('a first sample from each stats', () => json.stdout.includes('\n') && /^UPLINK/m.test(text.stdout), 10000);

    const scrape = async () => parseScrape(await (await fetch(`${url}/metrics`)).text());
    const kernelStat = (s: Awaited<ReturnType<typeof scrape>>, stat: string) =>
      total(s, 'vhostwire_uplink_interface_statistic', { port: 'up0', stat });
    let s = await scrape();
    await waitFor(
      "the gen's 5000 frames out",
      async () => total((s = await scrape()), 'vhostwire_port_transmit_packets_total', { port: 'up0' }) === 5000,
    );
    await waitFor('the kernel counted them', async () => kernelStat((s = await scrape()), 'tx_packets') === 5000);
    t.equal(
      kernelStat(s, 'tx_packets'),
      total(s, 'vhostwire_port_transmit_packets_total', { port: 'up0' }),
      "the interface's tx_packets are ours",
    );
    t.equal(linkStats(peer, ns).rx.packets, 5000, 'the far end received the 5000');

    // In: frames flooded from the namespace while serve (its PMD with it) is stopped, more than the
    // receive ring holds (AF_PACKET 4 MiB, about 30,000 60-byte frames; AF_XDP 2,048).
    const frame = Buffer.concat([
      Buffer.from('02767700000202767700000108004500002e00000000401100000a0001010a000102', 'hex'),
      Buffer.alloc(26),
    ]);
    const flood = mode === 'kernel' ? 50000 : 10000;
    process.kill(serve.pid, 'SIGSTOP');
    stopped = true;
    const py = [
      'import socket, sys',
      's = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)',
      's.bind((sys.argv[1], 0))',
      'f = bytes.fromhex(sys.argv[2])',
      'print(sum(s.send(f) == len(f) for _ in range(int(sys.argv[3]))))',
    ].join('\n');
    const sent = Number(
      execFileSync('ip', ['netns', 'exec', ns, 'python3', '-c', py, peer, frame.toString('hex'), String(flood)], { encoding: 'utf8' }),
    );
    process.kill(serve.pid, 'SIGCONT');
    stopped = false;
    t.equal(sent, flood, `the namespace sent ${flood}`);

    const socketDrops = (x: typeof s) => total(x, 'vhostwire_uplink_kernel_drops_total', { port: 'up0' });
    const received = (x: typeof s) => total(x, 'vhostwire_port_receive_packets_total', { port: 'up0' });
    await waitFor(`all ${sent} frames received or dropped at our socket`, async () => {
      s = await scrape();
      return received(s) + socketDrops(s) === sent;
    });
    t.equal(kernelStat(s, 'rx_packets'), sent, "the interface's rx_packets: every frame sent");
    t.ok(socketDrops(s) > 0 && received(s) > 0, `we received ${received(s)}, the kernel dropped ${socketDrops(s)} at our full ring`);
    const reason = mode === 'kernel' ? 'packet_drops' : 'xdp_rx_dropped';
    t.equal(total(s, 'vhostwire_uplink_kernel_drops_total', { port: 'up0', reason }), socketDrops(s), `all of them ${reason}`);
    t.equal(total(s, 'vhostwire_port_drops_total', { port: 'up0' }), 0, 'none dropped by us');
    t.equal(
      kernelStat(s, 'rx_dropped'),
      mode === 'kernel' ? 0 : socketDrops(s),
      mode === 'kernel' ? 'the veth dropped none' : "the veth's rx_dropped are the same frames as xdp_rx_dropped",
    );

    // stats: over its samples, the differences add up to the kernel's drops, all explained.
    const samples = () =>
      json.stdout
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as JsonSample);
    const n0 = samples().length;
    await waitFor('two more samples', () => samples().length >= n0 + 2, 10000);
    const sum = { rx: 0, tx: 0, rxUnexplained: 0, txUnexplained: 0, cause: 0 };
    for (const x of samples()) {
      const d = x.ports.find((p) => p.name === 'up0')!.kernel!.difference;
      sum.rx += d.rx.frames;
      sum.tx += d.tx.frames;
      sum.rxUnexplained += d.rx.unexplained;
      sum.txUnexplained += d.tx.unexplained;
      sum.cause += d.rx.causes[reason] ?? 0;
    }
    t.same(
      sum,
      { rx: socketDrops(s), tx: 0, rxUnexplained: 0, txUnexplained: 0, cause: socketDrops(s) },
      `stats --json: received, the kernel's count exceeds ours by its ${socketDrops(s)} drops at our socket; transmitted, none`,
    );
    await waitFor(
      `a text sample after the flood (stats: ${text.running ? 'running' : `exited, ${text.stderr}`}; up0's rows: ${JSON.stringify(
        text.stdout.split('\n').filter((l) => l.startsWith('up0 ')),
      )})`,
      // serve is stopped while the kernel counts the flood: a sample taken then shows the kernel's count
      // unexplained, and the next one our drops as its cause against the frames we then received.
      () => new RegExp(`^up0 .* rx -?\\d+ \\((?:[^)]* )?${reason}=\\d+`, 'm').test(text.stdout),
      10000,
    );
    t.pass(`stats shows the difference with its cause (${/rx \d+ \([^)]*\) tx \S+/.exec(text.stdout)?.[0]})`);
    const rows = () => text.stdout.split('\n').filter((l) => /^up0 .* rx -?\d+.* tx -?\d+/.test(l));
    const seen = rows().length;
    await waitFor('one more text sample', () => rows().length > seen, 10000);
    t.match(rows()[rows().length - 1], / rx 0 tx 0$/, 'and none once the traffic is over');

    json.kill('SIGTERM');
    text.kill('SIGTERM');
    serve.kill('SIGTERM');
    t.same(await serve.wait(), { code: 0, signal: null }, `serve exits 0 (stderr: ${serve.stderr})`);
  });
