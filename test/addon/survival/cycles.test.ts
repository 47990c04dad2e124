// Survival (stage.ts): 300 connect/disconnect cycles on one port, some leaving in the middle of a message.
import * as net from 'node:net';
import t from 'tap';
import { frontend } from '../../../src/harness/frontend-native';
import { waitFor } from '../../support/fixture';
import { REQ, V1, header } from '../../support/vhost-user-wire';
import {
  RX,
  RSS_SLACK_CYCLES,
  fdCount,
  memfdMaps,
  rss,
  f,
  vp,
  victim,
  rxWorks,
  txWorks,
  closeVictim,
  survives,
  eventsOf,
  baseline,
} from './stage';

baseline();

t.test('300 connect/disconnect cycles on one port leave fds, mappings and RSS flat', async (t) => {
  const fds0 = fdCount();
  const maps0 = memfdMaps();
  const rss0 = rss();
  const since = f.events.length;
  let failures = 0;
  const disconnects = () => eventsOf(since, 'disconnected').length;
  for (let i = 0; i < 300; i++) {
    const want = disconnects() + 1;
    try {
      if (i % 3 === 2) {
        // A bare socket: two headers, one of them cut short, then gone.
        await new Promise<void>((resolve) => {
          const s = net.createConnection(vp, () => {
            s.write(Buffer.concat([header(REQ.SET_OWNER, V1, 0), header(REQ.GET_FEATURES, V1, 0).subarray(0, 7)]));
            s.destroy();
          });
          s.on('close', () => resolve());
          s.on('error', () => resolve());
        });
      } else {
        const h = new (frontend().VirtioUser)({ path: vp, memSize: 1 << 20, queueSize: 64, timeoutMs: 3000 });
        // Every other one leaves in the middle of a message, with an fd in flight.
        if (i % 3 === 1) h.rawBytes(header(REQ.SET_VRING_CALL, V1, 8), [h.vringFds(RX).call]);
        h.close();
      }
      const deadline = Date.now() + 3000;
      while (disconnects() < want && Date.now() < deadline) await new Promise((r) => setTimeout(r, 1));
      if (disconnects() < want) throw new Error('no disconnected event');
    } catch (e) {
      if (failures++ < 3) t.comment(`cycle ${i}: ${String(e)}`);
    }
  }
  t.equal(failures, 0, '300 cycles, each connected and disconnected');
  t.equal(eventsOf(since, 'connected').length, 300, '300 connected events');
  t.equal(eventsOf(since, 'error').filter((e) => /already has one/.test(e.reason)).length, 0, 'never refused as a second front end');
  await waitFor('fds flat', () => fdCount() === fds0, 3000).catch(() => {});
  t.equal(fdCount(), fds0, 'open fds flat after 300 cycles');
  t.equal(memfdMaps(), maps0, 'memfd mappings flat after 300 cycles');
  const grown = rss() - rss0;
  t.ok(grown < RSS_SLACK_CYCLES, `RSS grew by ${(grown / 2 ** 20).toFixed(1)} MiB over 300 cycles (< ${RSS_SLACK_CYCLES >> 20} MiB)`);
  const v = await victim();
  await rxWorks(t, v.h, 'after 300 cycles');
  await txWorks(t, v.h, 'after 300 cycles');
  await closeVictim(v);
  await survives(t, '300 cycles');
});
