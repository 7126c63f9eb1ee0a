import { readFileSync, readdirSync } from 'node:fs';

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on Linux). */
const CLK_TCK = 100;

/** CPU seconds (user + system) and resident set of a set of processes, from /proc. */
export interface ProcSample {
  cpuSeconds: number;
  rssKiB: number;
}

/** Reads /proc/<pid>/stat and /proc/<pid>/status for each pid and sums them; null if one is gone. */
export function sampleProcs(pids: number[]): ProcSample | null {
  let cpu = 0;
  let rss = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      // Fields after the command name, which is in parentheses and may hold spaces.
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      cpu += (Number(rest[11]) + Number(rest[12])) / CLK_TCK;
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const m = /VmRSS:\s+(\d+) kB/.exec(status);
      rss += m ? Number(m[1]) : 0;
    } catch {
      return null;
    }
  }
  return { cpuSeconds: cpu, rssKiB: rss };
}

/** Samples a set of processes every `ms`, keeping the peak RSS since the last `mark()`. */
export class ProcWatch {
  peakRssKiB = 0;
  last: ProcSample | null = null;
  private readonly timer: NodeJS.Timeout | undefined;

  constructor(
    readonly pids: number[],
    ms = 200,
  ) {
    if (pids.length === 0) return;
    this.poll();
    this.timer = setInterval(() => this.poll(), ms);
    this.timer.unref();
  }

  get enabled(): boolean {
    return this.pids.length > 0;
  }

  poll(): ProcSample | null {
    if (!this.enabled) return null;
    const s = sampleProcs(this.pids);
    if (s) {
      this.last = s;
      if (s.rssKiB > this.peakRssKiB) this.peakRssKiB = s.rssKiB;
    }
    return s;
  }

  /** Starts a new interval: returns the current sample and resets the peak. */
  mark(): ProcSample | null {
    const s = this.poll();
    this.peakRssKiB = s?.rssKiB ?? 0;
    return s;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}

/** Busy and total jiffies of the whole machine (all cores), from /proc/stat. */
export function machineTicks(): { busy: number; total: number } | null {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    const total = f.reduce((a, b) => a + b, 0);
    const idle = (f[3] ?? 0) + (f[4] ?? 0);
    return { busy: total - idle, total };
  } catch {
    return null;
  }
}

/** RSS and PSS summed over process trees, with the pids counted. */
export interface TreeSample {
  pids: number[];
  rssKiB: number;
  /** Proportional set size: pages shared between the processes (code, the lmdb map) counted once. */
  pssKiB: number;
}

/** Every live pid below `roots` (children, grandchildren, …), the roots included, from /proc. */
export function processTree(roots: number[]): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const list = children.get(ppid);
      if (list) list.push(Number(name));
      else children.set(ppid, [Number(name)]);
    } catch {
      // Gone between the listing and the read.
    }
  }
  const out: number[] = [];
  const todo = [...roots];
  while (todo.length > 0) {
    const pid = todo.pop()!;
    if (out.includes(pid)) continue;
    out.push(pid);
    todo.push(...(children.get(pid) ?? []));
  }
  return out.sort((a, b) => a - b);
}

/** RSS (VmRSS) and PSS (smaps_rollup) summed over the trees below `roots`. */
export function sampleTree(roots: number[]): TreeSample {
  const pids = processTree(roots);
  let rss = 0;
  let pss = 0;
  const live: number[] = [];
  for (const pid of pids) {
    try {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const m = /VmRSS:\s+(\d+) kB/.exec(status);
      if (!m) continue; // a zombie
      const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
      const p = /\nPss:\s+(\d+) kB/.exec(rollup);
      rss += Number(m[1]);
      pss += p ? Number(p[1]) : 0;
      live.push(pid);
    } catch {
      // Gone.
    }
  }
  return { pids: live, rssKiB: rss, pssKiB: pss };
}

/** The kernel's TCP socket figures (/proc/net/sockstat): sockets in use, and their memory in KiB. */
export function tcpSockstat(): { inuse: number; timeWait: number; memKiB: number } | null {
  try {
    const m = /TCP: inuse (\d+) orphan \d+ tw (\d+) alloc \d+ mem (\d+)/.exec(
      readFileSync('/proc/net/sockstat', 'utf8'),
    );
    // `mem` is in pages.
    return m ? { inuse: Number(m[1]), timeWait: Number(m[2]), memKiB: Number(m[3]) * 4 } : null;
  } catch {
    return null;
  }
}

/** MemAvailable of the machine, MiB. */
export function availableMiB(): number {
  const m = /MemAvailable:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'));
  return m ? Math.floor(Number(m[1]) / 1024) : Number.POSITIVE_INFINITY;
}
