// A front end that floods a vhost-user socket with rejected messages, as a child process:
//   node dist/test/support/flood.js SOCKET TOTAL BATCH
// It sends TOTAL messages with request numbers nobody defines (50..59, no payload, no reply wanted), in
// batches of BATCH, each batch followed by GET_FEATURES, whose reply says the backend has handled the
// whole batch. A backend that hangs up is connected to again, and the batch it cut off is sent again.
// Prints one JSON line: { handled, sent, connects }: handled counts the messages of the batches that
// were answered, each of which the backend rejected.
import * as net from 'node:net';

const [path, totalArg, batchArg] = process.argv.slice(2);
const total = Number(totalArg);
const batch = Number(batchArg);
if (!path || !(total > 0) || !(batch > 0)) {
  console.error('usage: flood.js SOCKET TOTAL BATCH');
  process.exit(2);
}

const HEADER = 12;
const REPLY = HEADER + 8; // GET_FEATURES: a u64
const V1 = 1;

function messages(n: number): Buffer {
  const b = Buffer.alloc(HEADER * (n + 1));
  for (let i = 0; i < n; i++) {
    b.writeUInt32LE(50 + (i % 10), HEADER * i);
    b.writeUInt32LE(V1, HEADER * i + 4);
  }
  b.writeUInt32LE(1, HEADER * n); // GET_FEATURES
  b.writeUInt32LE(V1, HEADER * n + 4);
  return b;
}

let handled = 0;
let sent = 0;
let connects = 0;

function connect(): void {
  connects++;
  const s = net.createConnection(path);
  let inFlight = 0;
  let got = 0;
  const next = (): void => {
    if (handled >= total) {
      s.end();
      return;
    }
    inFlight = Math.min(batch, total - handled);
    sent += inFlight;
    s.write(messages(inFlight));
  };
  s.on('connect', next);
  s.on('data', (d: Buffer) => {
    got += d.length;
    while (got >= REPLY && inFlight) {
      got -= REPLY;
      handled += inFlight;
      inFlight = 0;
      next();
    }
  });
  s.on('error', () => undefined); // a hang-up mid-batch; 'close' follows
  s.on('close', () => {
    if (handled < total) connect();
    else console.log(JSON.stringify({ handled, sent, connects }));
  });
}

connect();
