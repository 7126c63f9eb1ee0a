import type { Bindings, ChildLoggerOptions, Level, LevelWithSilentOrString, Logger } from 'pino';

const LEVELS: readonly Level[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'];

type LogFn = (...args: unknown[]) => void;

/**
 * A request's logger that becomes a real pino child only when a line is actually written at an
 * enabled level. Fastify makes a child logger per request; pino's child (its own object, bindings
 * string, serializer and formatter objects) is about a kilobyte that a long-lived stream would keep
 * for its whole life, and building it is a measurable share of a small publish request. Methods
 * live on the prototype, so a request pays for one small object and its bindings.
 */
class LazyChildLogger {
  private real: Logger | undefined;

  constructor(
    private readonly parent: Logger,
    private readonly own: Bindings,
  ) {}

  /** The real child, made on first use. */
  get logger(): Logger {
    return (this.real ??= this.parent.child(this.own));
  }

  get level(): LevelWithSilentOrString {
    return (this.real ?? this.parent).level;
  }

  set level(level: LevelWithSilentOrString) {
    this.logger.level = level;
  }

  isLevelEnabled(level: LevelWithSilentOrString): boolean {
    return (this.real ?? this.parent).isLevelEnabled(level);
  }

  child(bindings: Bindings, options?: ChildLoggerOptions): Logger {
    return this.logger.child(bindings, options);
  }

  bindings(): Bindings {
    return this.real ? this.real.bindings() : { ...this.parent.bindings(), ...this.own };
  }

  silent(): void {}
}

for (const level of LEVELS) {
  Object.defineProperty(LazyChildLogger.prototype, level, {
    value: function (this: LazyChildLogger, ...args: unknown[]): void {
      if (!this.isLevelEnabled(level)) return;
      (this.logger[level] as LogFn)(...args);
    },
  });
}

/**
 * Fastify's `childLoggerFactory`: a lazy child unless the route asks for its own log level or
 * options, which only a real child can carry.
 */
export function lazyChildLoggerFactory(
  logger: Logger,
  bindings: Bindings,
  options: ChildLoggerOptions,
): Logger {
  if (Object.keys(options).length > 0) return logger.child(bindings, options);
  return new LazyChildLogger(logger, bindings) as unknown as Logger;
}
