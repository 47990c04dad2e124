// The vhost-user control plane against hostile front ends and hostile neighbours (issue 15, deliverables 3
// to 5): messages are reassembled without blocking, so a front end dripping a message a byte at a time
// delays no other port's handshake and no call from JavaScript; an idle connection is evicted so the real
// front end gets the port; a front end sending rejected messages is cut off after the limit; server
// sockets get their mode whatever the umask, in no world-writable directory without the sticky bit, and
// only allowed peers; in client mode a listener another user owns is not connected to. Hostile front ends
// are plain node sockets speaking the wire format by hand.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import t from 'tap';
import { Fixture, waitFor } from '../support/fixture';
import { WITHOUT_TEST_HOOKS } from '../support/unprivileged';

const GET_FEATURES = 1;
const V1 = 1;
const REPLY = 4;
const HEADER = 12;

function header(request: number, flags: number, size: number): Buffer {
  const b = Buffer.alloc(HEADER);
  b.writeUInt32LE(request >>> 0, 0);
  b.writeUInt32LE(flags >>> 0, 4);
  b.writeUInt32LE(size >>> 0, 8);
  return b;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A front end that speaks the wire format by hand over a plain socket. */
class RawFrontEnd {
  data = Buffer.alloc(0);
  closed = false;
  private constructor(readonly sock: net.Socket) {
    sock.on('data', (d) => (this.data = Buffer.concat([this.data, d])));
    sock.on('close', () => (this.closed = true));
    sock.on('error', () => {});
  }
  static connect(p: string): Promise<RawFrontEnd> {
    return new Promise((resolve, reject) => {
      const s = net.connect(p);
      s.once('connect', () => resolve(new RawFrontEnd(s)));
      s.once('error', reject);
    });
  }
  write(b: Buffer): Promise<void> {
    return new Promise((resolve, reject) => this.sock.write(b, (e) => (e ? reject(e) : resolve())));
  }
  close(): void {
    this.sock.destroy();
  }
}

const f = new Fixture('kernel', [-1]);
t.teardown(() => f.close());
const refusals = (port: string, reason: string): number => f.port(port).refusals?.find((r) => r.reason === reason)?.count ?? 0;
const eventsOf = (port: string, kind: string) => f.events.filter((e) => e.port === port && e.kind === kind);
const IS_ROOT = process.getuid?.() === 0;
// A uid and gid no account on the machine has (tests chown files to it and run processes as it).
const STRANGER = 54321;

t.test('a front end dripping a message a byte per 500 ms delays neither another handshake nor ports()', async (t) => {
  const slow = f.vhost('slow');
  const quick = f.vhost('quick');
  const dripper = await RawFrontEnd.connect(slow);
  await waitFor('the dripper connected', () => eventsOf('slow', 'connected').length === 1);
  const msg = header(GET_FEATURES, V1, 0);
  let sent = 0;
  // The first bytes go before the second front end starts, so its whole handshake happens while the
  // backend holds a partial message from the dripper.
  await dripper.write(msg.subarray(0, 1));
  sent = 1;
  const dripping = (async () => {
    while (sent < msg.length && !dripper.closed) {
      await sleep(500);
      await dripper.write(msg.subarray(sent, sent + 1));
      sent++;
    }
  })();
  await sleep(600);
  const peer = f.peer({ path: quick });
  await f.waitConnected('quick');
  const answered = f.engine.ports().length;
  const sentWhenDone = sent;
  t.ok(
    sentWhenDone > 0 && sentWhenDone < msg.length,
    `the second front end completed its handshake and ports() answered (${answered} ports) while the dripper was mid-message (${sentWhenDone} of ${msg.length} bytes)`,
  );
  t.ok(peer.connected(), 'the second front end is connected');
  await dripping;
  await waitFor('the reply to the dripped GET_FEATURES', () => dripper.data.length >= HEADER + 8 || dripper.closed, 8000);
  t.notOk(dripper.closed, 'the dripper was not cut off: a slow message within the idle timeout is served');
  t.equal(dripper.data.readUInt32LE(0), GET_FEATURES, 'the reply is to GET_FEATURES');
  t.equal(dripper.data.readUInt32LE(4), V1 | REPLY, 'with the reply flag');
  t.equal(dripper.data.readUInt32LE(8), 8, 'and the 8-byte feature set');
  t.equal(eventsOf('slow', 'disconnected').length, 0, 'the dripper was never disconnected');
  dripper.close();
  peer.close();
  await waitFor('both gone', () => !f.port('slow').connected && !f.port('quick').connected);
  f.engine.removePort('slow');
  f.engine.removePort('quick');
});

t.test('a front end is disconnected at its 16th rejected message, with the reason', async (t) => {
  const p = f.vhost('rej');
  const fe = await RawFrontEnd.connect(p);
  // Request 63 does not exist: rejected, and without NEED_REPLY nothing is answered.
  for (let i = 0; i < 15; i++) await fe.write(header(63, V1, 0));
  await fe.write(header(GET_FEATURES, V1, 0));
  await waitFor('the reply after 15 rejected messages', () => fe.data.length >= HEADER + 8 || fe.closed);
  t.notOk(fe.closed, 'after 15 rejected messages the front end is still served');
  // The 16th: a GET_FEATURES with a payload it must not have, answered with an empty reply.
  const before = fe.data.length;
  await fe.write(Buffer.concat([header(GET_FEATURES, V1, 8), Buffer.alloc(8)]));
  await waitFor('the hang-up', () => fe.closed);
  t.pass('the 16th rejected message closes the connection');
  t.same(fe.data.subarray(before), header(GET_FEATURES, V1 | REPLY, 0), 'after answering it (an empty reply: refused)');
  await waitFor('disconnected event', () => eventsOf('rej', 'disconnected').length === 1);
  t.match(
    eventsOf('rej', 'disconnected')[0].reason,
    /^16 messages were rejected, the last VHOST_USER_GET_FEATURES: payload is 8 bytes, expected 0$/,
    'the event says why',
  );
  t.equal(refusals('rej', 'too_many_rejected'), 1, 'counted as too_many_rejected');
  await waitFor('16 error events', () => eventsOf('rej', 'error').length >= 16);
  t.equal(eventsOf('rej', 'error').length, 16, 'each rejection was reported');
  f.engine.removePort('rej');
});

t.test('an idle squatter is evicted after the idle timeout so the real front end connects', async (t) => {
  const p = f.vhost('sq');
  const squatter = await RawFrontEnd.connect(p);
  await waitFor('the squatter connected', () => eventsOf('sq', 'connected').length === 1);
  // While it holds the port, another front end is turned away (one front end per port)...
  const second = await RawFrontEnd.connect(p);
  await waitFor('the second connection closed by the backend', () => second.closed);
  t.ok(refusals('sq', 'busy') >= 1, `the second connection was refused as busy (${refusals('sq', 'busy')})`);
  t.notOk(squatter.closed, 'the squatter still holds the port');
  // ...until the squatter, having said nothing, is closed (default idle timeout: 10 s).
  await waitFor('the squatter evicted', () => squatter.closed, 15000);
  t.equal(squatter.data.length, 0, 'the squatter was sent nothing');
  await waitFor('disconnected event', () => eventsOf('sq', 'disconnected').length === 1);
  t.match(eventsOf('sq', 'disconnected')[0].reason, /no complete message within 10000 ms of connecting/, 'the event says why');
  t.equal(refusals('sq', 'handshake_timeout'), 1, 'counted as handshake_timeout');
  const real = f.peer({ path: p });
  await f.waitConnected('sq');
  t.ok(real.connected(), 'the real front end has the port');
  real.close();
  await waitFor('gone', () => !f.port('sq').connected);
  f.engine.removePort('sq');
});

t.test('socket mode 0660 (and 0600 when asked) under umask 000; owner and group applied', async (t) => {
  const old = process.umask(0);
  try {
    const p = f.vhost('m0');
    t.equal(fs.statSync(p).mode & 0o7777, 0o660, 'default: 0660 although the umask is 000');
    const q = f.sock('m1');
    f.engine.addPort('vhost-user', 'm1', { path: q, client: false, queues: 1, socketMode: 0o600 });
    t.equal(fs.statSync(q).mode & 0o7777, 0o600, 'socketMode 0600 is applied');
  } finally {
    process.umask(old);
  }
  // Under an ordinary umask the file still gets exactly the mode asked for, not less.
  const old2 = process.umask(0o077);
  try {
    const r = f.sock('m2');
    f.engine.addPort('vhost-user', 'm2', { path: r, client: false, queues: 1, socketMode: 0o660 });
    t.equal(fs.statSync(r).mode & 0o7777, 0o660, 'under umask 077 the mode is 0660 too');
  } finally {
    process.umask(old2);
  }
  if (IS_ROOT) {
    const s = f.sock('m3');
    f.engine.addPort('vhost-user', 'm3', { path: s, client: false, queues: 1, socketOwner: STRANGER, socketGroup: STRANGER + 1 });
    const st = fs.statSync(s);
    t.same([st.uid, st.gid], [STRANGER, STRANGER + 1], 'socketOwner and socketGroup are applied');
    f.engine.removePort('m3');
  }
  for (const n of ['m0', 'm1', 'm2']) f.engine.removePort(n);
});

t.test('a socket in a world-writable directory without the sticky bit is refused', async (t) => {
  const dir = path.join(f.dir, 'open');
  fs.mkdirSync(dir);
  fs.chmodSync(dir, 0o777);
  const p = path.join(dir, 'w.sock');
  t.throws(
    () => f.engine.addPort('vhost-user', 'w', { path: p, client: false, queues: 1 }),
    /port "w": the socket's directory .*\/open is writable by every user and has no sticky bit, so anyone could replace the socket: put it in a directory only trusted users can write, or set the sticky bit \(chmod \+t /,
    'refused, naming the port, the directory and what to do',
  );
  t.notOk(fs.existsSync(p), 'no socket was created');
  fs.chmodSync(dir, 0o1777);
  f.engine.addPort('vhost-user', 'w', { path: p, client: false, queues: 1 });
  t.ok(fs.statSync(p).isSocket(), 'with the sticky bit (as /tmp has) the socket is made');
  f.engine.removePort('w');
});

/** Runs a node script as uid/gid STRANGER; resolves with its stdout. */
function runAsStranger(script: string, args: string[], groups: number[] = []): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      WITHOUT_TEST_HOOKS[0],
      [
        ...WITHOUT_TEST_HOOKS.slice(1),
        'setpriv',
        `--reuid=${STRANGER}`,
        `--regid=${STRANGER}`,
        groups.length ? `--groups=${groups.join(',')}` : '--clear-groups',
        '--',
        process.execPath,
        '-e',
        script,
        ...args,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.on('error', reject);
    child.on('close', () => resolve(out));
  });
}

// Connects, gives the backend 1.5 s to hang up; prints "closed", "open" or why it could not connect.
const CONNECT_SCRIPT = `
const s = require('net').connect(process.argv[1]);
let state = 'connecting';
s.on('connect', () => { state = 'open'; });
s.on('error', (e) => { if (state === 'connecting') state = e.code; });
s.on('close', () => { if (state === 'open') state = 'closed'; });
setTimeout(() => { process.stdout.write(state); s.destroy(); }, 1500);
`;

t.test(
  'front ends are checked by SO_PEERCRED: another uid is refused unless allowed',
  { skip: IS_ROOT ? false : 'needs root: a process of another uid' },
  async (t) => {
    // A directory the stranger may enter (the fixture's own is 0700).
    const dir = fs.mkdtempSync(path.join(f.dir, '..', 'vhostwire-peercred-'));
    fs.chmodSync(dir, 0o755);
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const p = path.join(dir, 'pc.sock');
    // Mode 0666, so that only the credentials check stands between the stranger and the port.
    f.engine.addPort('vhost-user', 'pc', { path: p, client: false, queues: 1, socketMode: 0o666 });
    t.equal(await runAsStranger(CONNECT_SCRIPT, [p]), 'closed', 'a process of uid 54321 is hung up on');
    t.equal(refusals('pc', 'peer_credentials'), 1, 'counted as peer_credentials');
    t.equal(eventsOf('pc', 'connected').length, 0, 'it never became the front end');
    t.match(
      eventsOf('pc', 'error').at(-1)?.reason,
      /front end refused on .*pc\.sock: process \d+ runs as uid 54321, gid 54321, and none of its groups are allowed \(allow them with the port's allow-uid or allow-gid\)/,
      'the event says who and how to allow it',
    );
    f.engine.removePort('pc');
    f.engine.addPort('vhost-user', 'pc', { path: p, client: false, queues: 1, socketMode: 0o666, allowUids: String(STRANGER) });
    t.equal(await runAsStranger(CONNECT_SCRIPT, [p]), 'open', 'with allowUids it is served');
    t.equal(eventsOf('pc', 'connected').length, 1, 'and became the front end');
    await waitFor('gone', () => !f.port('pc').connected);
    f.engine.removePort('pc');
    f.engine.addPort('vhost-user', 'pc', { path: p, client: false, queues: 1, socketMode: 0o666, allowGids: String(STRANGER) });
    t.equal(await runAsStranger(CONNECT_SCRIPT, [p]), 'open', 'with its gid in allowGids it is served too');
    await waitFor('gone', () => !f.port('pc').connected);
    f.engine.removePort('pc');
    // The socket's group lets in a process that has it as a supplementary group (SO_PEERGROUPS).
    f.engine.addPort('vhost-user', 'pc', { path: p, client: false, queues: 1, socketMode: 0o666, socketGroup: STRANGER + 2 });
    t.equal(
      await runAsStranger(CONNECT_SCRIPT, [p], [STRANGER + 2]),
      'open',
      'with the socket group as a supplementary group it is served',
    );
    await waitFor('gone', () => !f.port('pc').connected);
    t.equal(await runAsStranger(CONNECT_SCRIPT, [p]), 'closed', 'without that group it is refused again');
    f.engine.removePort('pc');
    // Whatever group the file has when the front end connects counts (serve --user hands the socket to
    // its user after the port made it).
    f.engine.addPort('vhost-user', 'pc', { path: p, client: false, queues: 1, socketMode: 0o666 });
    fs.chownSync(p, process.getuid!(), STRANGER + 3);
    t.equal(
      await runAsStranger(CONNECT_SCRIPT, [p], [STRANGER + 3]),
      'open',
      "a member of the file's group, given to it after it was made, is served",
    );
    await waitFor('gone', () => !f.port('pc').connected);
    f.engine.removePort('pc');
  },
);

t.test(
  'client mode: a listener owned by another uid is not connected to',
  { skip: IS_ROOT ? false : 'needs root: chown to another uid' },
  async (t) => {
    const p = f.sock('cl');
    let accepted = 0;
    const server = net.createServer((c) => {
      accepted++;
      c.on('error', () => {});
    });
    await new Promise<void>((r) => server.listen(p, r));
    try {
      // Planted by someone else: the same listener, its file owned by a stranger.
      fs.chownSync(p, STRANGER, STRANGER);
      f.engine.addPort('vhost-user', 'cl', { path: p, client: true, queues: 1 });
      await waitFor('the refusal', () => refusals('cl', 'listener_owner') >= 2, 5000);
      t.equal(accepted, 0, `never connected (${refusals('cl', 'listener_owner')} attempts refused)`);
      const errors = eventsOf('cl', 'error');
      t.equal(errors.length, 1, 'reported once, not once per retry');
      t.match(
        errors[0].reason,
        /the listener .*cl\.sock is owned by uid 54321, not by us, root or an allowed uid \(allow-uid\): not connecting to it/,
        'the event says why',
      );
      // Once the file is ours again the port connects on its next retry.
      fs.chownSync(p, process.getuid!(), process.getgid!());
      await waitFor('the connection', () => accepted === 1, 5000);
      t.pass('an owner that is us is connected to');
      f.engine.removePort('cl');
    } finally {
      server.close();
    }
  },
);

t.test('the option checks at the edge refuse bad socket settings', async (t) => {
  const { vhostUser } = await import('../../src/ports/vhost-user');
  t.throws(
    () => vhostUser.parseFlag('vm0=/tmp/x.sock,socket-mode=0999'),
    /socket mode must be octal permission bits such as 0660, got "0999"/,
  );
  t.throws(() => vhostUser.parseFlag('vm0=/tmp/x.sock,socket-mode=4755'), /socket mode must be octal permission bits/);
  t.throws(() => vhostUser.parseFlag('vm0=/tmp/x.sock,client,socket-mode=0600'), /socket mode, owner and group are for server sockets/);
  t.throws(() => vhostUser.parseFlag('vm0=/tmp/x.sock,socket-owner=no-such-user-here'), /no user named "no-such-user-here"/);
  t.throws(() => vhostUser.parseFlag('vm0=/tmp/x.sock,socket-owner=root:root'), /"root:root" is not one user/);
  t.throws(
    () => vhostUser.parseConfig('cfg', { name: 'vm0', path: '/tmp/x.sock', socketMode: 660 }),
    /cfg\.socketMode: expected a string, got 660/,
  );
  t.throws(() => vhostUser.parseFlag('vm0=/tmp/x.sock,reject-limit=0'), /reject-limit must be 1\.\.1048576, got 0/);
  const spec = vhostUser.parseFlag(
    'vm0=/tmp/x.sock,socket-mode=600,socket-owner=0,socket-group=0,allow-uid=0:107,allow-gid=5,reject-limit=4,idle-timeout=2000',
  );
  t.same(
    vhostUser.params(spec),
    {
      path: '/tmp/x.sock',
      client: false,
      queues: 1,
      socketMode: 0o600,
      socketOwner: 0,
      socketGroup: 0,
      allowUids: '0,107',
      allowGids: '5',
      rejectLimit: 4,
      idleTimeoutMs: 2000,
      withholdOffloads: false,
    },
    'every option reaches the addon checked',
  );
  const fromFile = vhostUser.parseConfig('cfg', { name: 'vm0', path: '/tmp/x.sock', socketMode: '0640', allowUid: [107, 'root'] });
  t.same([fromFile.socketMode, fromFile.allowUids], [0o640, [107, 0]], 'and the config file keys');
  t.same(
    vhostUser.params(vhostUser.parseFlag('vm0=/tmp/x.sock')),
    { path: '/tmp/x.sock', client: false, queues: 1, socketMode: 0o660, rejectLimit: 16, idleTimeoutMs: 10000, withholdOffloads: false },
    'defaults',
  );
});

// In a child process limited to 256 fds: the child fills its fd table, the parent connects, and the
// backend's accept fails with EMFILE until the child gives fds back. A listener left watched would be
// reported readable again at once (level-triggered), for as long as the shortage lasts.
const EMFILE_CHILD = `
const fs = require('fs');
const { native } = require(process.argv[1]);
const events = [];
const engine = new native.Engine({ pmdCores: [-1], mode: 'kernel', onEvent: (e) => events.push(e) });
engine.addPort('vhost-user', 'e', { path: process.argv[2], client: false, queues: 1 });
const held = [];
for (;;) { try { held.push(fs.openSync('/dev/null', 'r')); } catch { break; } }
const start = Date.now();
const backoffs = () => engine.ports()[0].refusals.find((r) => r.reason === 'accept_backoff')?.count ?? 0;
process.stdout.write('ready\\n');
process.stdin.once('data', () => {
  const elapsed = Date.now() - start, during = backoffs();
  held.forEach((fd) => fs.closeSync(fd));
  const deadline = Date.now() + 3000;
  const poll = () => {
    const connected = engine.ports()[0].connected;
    if (!connected && Date.now() < deadline) return setTimeout(poll, 20);
    process.stdout.write(JSON.stringify({ elapsed, during, connected, events: events.map((e) => e.reason) }) + '\\n');
    engine.close();
    process.exit(0);
  };
  poll();
});
`;

t.test('accept backs off for 100 ms when the process is out of fds, counted, and accepts once fds are back', async (t) => {
  const p = f.sock('emfile');
  const child = spawn(
    'prlimit',
    ['--nofile=256:256', process.execPath, '-e', EMFILE_CHILD, path.join(__dirname, '..', '..', 'src', 'native.js'), p],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = new Promise((r) => child.on('close', r));
  await waitFor('the child to fill its fd table', () => out.includes('ready\n'), 10000);
  const fe = await RawFrontEnd.connect(p);
  await sleep(1000);
  child.stdin!.write('report\n');
  await waitFor('the report', () => out.split('\n').length > 2, 10000);
  const r = JSON.parse(out.split('\n')[1]) as { elapsed: number; during: number; connected: boolean; events: string[] };
  t.ok(r.during >= 1, `accept backed off (${r.during} times in ${r.elapsed} ms)`);
  t.ok(r.during <= r.elapsed / 100 + 2, `at most once per 100 ms, not a spin (${r.during} in ${r.elapsed} ms)`);
  t.match(r.events[0], /^cannot accept a front end on .*emfile\.sock: Too many open files; not accepting for 100 ms$/, 'reported');
  t.ok(r.connected, 'once fds are back the waiting front end is accepted');
  fe.close();
  await exited;
});
