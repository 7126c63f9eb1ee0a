import { readFileSync } from 'node:fs';

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
