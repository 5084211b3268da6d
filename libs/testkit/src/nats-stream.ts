import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";

export interface StreamMessage {
  seq: number;
  subject: string;
  /** Nats-Msg-Id ("" when none). */
  msgId: string;
  data: Uint8Array;
}

/**
 * Every message a JetStream stream holds (only subjects starting with
 * `subjectPrefix`, when given), in order, read without a consumer. Rejects
 * while the stream does not exist.
 */
export async function readStream(natsUrl: string, stream: string, subjectPrefix = ""): Promise<StreamMessage[]> {
  const nc = await connect({ servers: natsUrl });
  try {
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info(stream);
    const out: StreamMessage[] = [];
    for (let seq = info.state.first_seq; seq > 0 && seq <= info.state.last_seq; seq++) {
      const m = await jsm.streams.getMessage(stream, { seq }).catch(() => null);
      if (!m || !m.subject.startsWith(subjectPrefix)) continue;
      out.push({ seq, subject: m.subject, msgId: m.header?.get("Nats-Msg-Id") ?? "", data: m.data });
    }
    return out;
  } finally {
    await nc.close();
  }
}

/** Publishes to JetStream as a service does: with a message id (the stream must exist). */
export async function publishToStream(
  natsUrl: string,
  subject: string,
  data: Uint8Array,
  msgId: string,
): Promise<void> {
  const nc = await connect({ servers: natsUrl });
  try {
    await jetstream(nc).publish(subject, data, { msgID: msgId });
  } finally {
    await nc.close();
  }
}
