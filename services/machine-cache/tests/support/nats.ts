import { jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";

export interface StreamMessage {
  subject: string;
  data: Uint8Array;
  msgId: string | undefined;
}

/** Every message a stream holds on `subject` (waits up to timeoutMs for at least `atLeast`). */
export async function readStream(
  natsUrl: string,
  stream: string,
  subject: string,
  atLeast = 1,
  timeoutMs = 10_000,
): Promise<StreamMessage[]> {
  const nc = await connect({ servers: natsUrl });
  try {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      // One subject as a string: filter_subjects (an array) needs nats-server 2.10.
      const consumer = await jetstream(nc).consumers.get(stream, { filter_subjects: subject });
      const out: StreamMessage[] = [];
      for (let pending = (await consumer.info()).num_pending; pending > 0; pending--) {
        const m = await consumer.next({ expires: 5_000 });
        if (!m) break;
        out.push({ subject: m.subject, data: m.data, msgId: m.headers?.get("Nats-Msg-Id") });
      }
      if (out.length >= atLeast || Date.now() > deadline) return out;
      await new Promise((r) => setTimeout(r, 200));
    }
  } finally {
    await nc.close();
  }
}

/** Publishes as a service would: to the stream, with a message id. */
export async function publish(natsUrl: string, subject: string, data: Uint8Array, msgId: string): Promise<void> {
  const nc = await connect({ servers: natsUrl });
  try {
    await jetstream(nc).publish(subject, data, { msgID: msgId });
  } finally {
    await nc.close();
  }
}
