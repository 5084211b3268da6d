/** A message delivered to a durable consumer. */
export interface BusMessage {
  subject: string;
  data: Uint8Array;
  headers: Record<string, string>;
  /** 1 on first delivery. */
  deliveryCount: number;
}

export interface ConsumerOptions {
  /** Durable name: the consumer resumes where it stopped after a restart. */
  durable: string;
  filterSubjects: string[];
  /** Resolve to acknowledge; throw to have the message redelivered after a backoff. */
  handler: (msg: BusMessage) => Promise<void>;
  /** Deliveries before a message is given up (default: unlimited). */
  maxDeliver?: number;
  /** Time a handler has before the message is redelivered (default 30 s). */
  ackWaitMs?: number;
}

export interface Consumer {
  stop(): Promise<void>;
}

/** A message of a stream as a follower reads it. */
export interface StreamMessage {
  subject: string;
  data: Uint8Array;
  /** The stream's own sequence number. */
  streamSequence: number;
  /** When the stream stored it (the server's clock: the same for every reader). */
  storedAt: Date;
}

export interface FollowOptions {
  /** The stream read, from its first message. */
  stream: string;
  filterSubject: string;
  /** Called in stream order; a throw is logged and the message skipped (nothing is acknowledged). */
  handler: (msg: StreamMessage) => void;
}

export interface Follower {
  /** Resolves once every message stored when following began has been handled. */
  readonly caughtUp: Promise<void>;
  stop(): Promise<void>;
}

/**
 * The event bus: JetStream in production, an in-process stand-in only for
 * `npm start` on a machine without NATS.
 */
export interface EventBus {
  /** Stores a message; msgId de-duplicates republished events. Throws while disconnected. */
  publish(subject: string, data: Uint8Array, opts: { msgId: string; headers?: Record<string, string> }): Promise<void>;
  consume(opts: ConsumerOptions): Promise<Consumer>;
  /**
   * Reads a whole stream and then every new message, in stream order, with
   * no durable state and no acknowledgements (an ordered consumer of its
   * own): each reader of the stream sees the same messages in the same order.
   */
  follow(opts: FollowOptions): Follower;
  /** True while connected to the broker. */
  readonly connected: boolean;
  /** Resolves once first connected (and the stream exists); rejects only when closed before that. */
  whenReady(): Promise<void>;
  close(): Promise<void>;
}

/** NATS subject matching: "*" is one token, ">" the rest. */
export function subjectMatches(pattern: string, subject: string): boolean {
  const p = pattern.split(".");
  const s = subject.split(".");
  for (let i = 0; i < p.length; i++) {
    if (p[i] === ">") return s.length > i;
    if (i >= s.length || (p[i] !== "*" && p[i] !== s[i])) return false;
  }
  return p.length === s.length;
}

/** Exponential backoff for redelivery, capped. */
export function redeliveryDelayMs(deliveryCount: number): number {
  return Math.min(30_000, 250 * 2 ** Math.max(0, deliveryCount - 1));
}
