// The kernel's own counters for an interface, to set beside ours: the standard statistics every driver
// keeps (/sys/class/net/IF/statistics) and the driver's private ones (`ethtool -S`). When our uplink
// says it sent N frames, these say what the interface itself saw, and where a frame went missing.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

/** `ethtool -S` output ("NIC statistics:" then "name: value" lines) to a record. */
export function parseEthtoolStats(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^\s+([^:]+):\s+(-?\d+)\s*$/.exec(line);
    if (m) out[m[1].trim()] = Number(m[2]);
  }
  return out;
}

/** /sys/class/net/IF/statistics; rejects, naming it, when the interface does not exist. */
export async function sysfsStatistics(ifname: string): Promise<Record<string, number>> {
  const dir = path.join('/sys/class/net', ifname, 'statistics');
  const names = await fs.readdir(dir).catch(() => {
    throw new Error(`interface ${ifname} does not exist (no /sys/class/net/${ifname})`);
  });
  const out: Record<string, number> = {};
  await Promise.all(
    names.map(async (n) => {
      out[n] = Number((await fs.readFile(path.join(dir, n), 'utf8')).trim());
    }),
  );
  return out;
}

/** `ethtool -S IF`: the stats, or null and why not. */
export function ethtoolS(ifname: string, timeoutMs = 2000): Promise<{ stats: Record<string, number> | null; error?: string }> {
  return new Promise((resolve) => {
    execFile('ethtool', ['-S', ifname], { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) {
        const why =
          (err as NodeJS.ErrnoException).code === 'ENOENT'
            ? 'ethtool is not installed (Debian: apt-get install ethtool)'
            : stderr.trim() || err.message;
        resolve({ stats: null, error: why });
      } else {
        resolve({ stats: parseEthtoolStats(stdout) });
      }
    });
  });
}
