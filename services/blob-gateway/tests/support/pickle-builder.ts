/**
 * Writes pickle programs opcode by opcode (no Python needed): the tests build
 * malicious and benign pickles exactly as an attacker or torch.save would.
 */
export class PickleBuilder {
  private readonly parts: Buffer[] = [];

  private op(code: number, ...payload: Buffer[]): this {
    this.parts.push(Buffer.from([code]), ...payload);
    return this;
  }

  proto(version: number): this {
    return this.op(0x80, Buffer.from([version]));
  }
  /** GLOBAL: c module\n name\n */
  global(module: string, name: string): this {
    return this.op(0x63, Buffer.from(`${module}\n${name}\n`, "utf8"));
  }
  /** STACK_GLOBAL: takes module and name from the stack. */
  stackGlobal(): this {
    return this.op(0x93);
  }
  /** INST: MARK args… i module\n name\n — calls the class with the marked args. */
  inst(module: string, name: string): this {
    return this.op(0x69, Buffer.from(`${module}\n${name}\n`, "utf8"));
  }
  /** BINUNICODE with a 4-byte length. */
  unicode(text: string): this {
    const bytes = Buffer.from(text, "utf8");
    const len = Buffer.alloc(4);
    len.writeUInt32LE(bytes.length);
    return this.op(0x58, len, bytes);
  }
  /** SHORT_BINUNICODE with a 1-byte length. */
  shortUnicode(text: string): this {
    const bytes = Buffer.from(text, "utf8");
    return this.op(0x8c, Buffer.from([bytes.length]), bytes);
  }
  /** SHORT_BINSTRING (protocol 1 bytes-as-str). */
  shortString(text: string): this {
    const bytes = Buffer.from(text, "latin1");
    return this.op(0x55, Buffer.from([bytes.length]), bytes);
  }
  int(n: number): this {
    if (n >= 0 && n < 256) return this.op(0x4b, Buffer.from([n]));
    const b = Buffer.alloc(4);
    b.writeInt32LE(n);
    return this.op(0x4a, b);
  }
  none(): this {
    return this.op(0x4e);
  }
  bool(value: boolean): this {
    return this.op(value ? 0x88 : 0x89);
  }
  mark(): this {
    return this.op(0x28);
  }
  tuple(): this {
    return this.op(0x74);
  }
  emptyTuple(): this {
    return this.op(0x29);
  }
  tuple1(): this {
    return this.op(0x85);
  }
  tuple2(): this {
    return this.op(0x86);
  }
  tuple3(): this {
    return this.op(0x87);
  }
  emptyDict(): this {
    return this.op(0x7d);
  }
  emptyList(): this {
    return this.op(0x5d);
  }
  appends(): this {
    return this.op(0x65);
  }
  setitem(): this {
    return this.op(0x73);
  }
  setitems(): this {
    return this.op(0x75);
  }
  reduce(): this {
    return this.op(0x52);
  }
  build(): this {
    return this.op(0x62);
  }
  newobj(): this {
    return this.op(0x81);
  }
  binpersid(): this {
    return this.op(0x51);
  }
  binput(index: number): this {
    return this.op(0x71, Buffer.from([index]));
  }
  binget(index: number): this {
    return this.op(0x68, Buffer.from([index]));
  }
  memoize(): this {
    return this.op(0x94);
  }
  pop(): this {
    return this.op(0x30);
  }
  stop(): this {
    return this.op(0x2e);
  }

  bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** `module.name(arg)` via GLOBAL + REDUCE: the classic payload. */
export function callPickle(module: string, name: string, arg: string, protocol = 2): Buffer {
  return new PickleBuilder().proto(protocol).global(module, name).unicode(arg).tuple1().reduce().stop().bytes();
}

/**
 * A torch-style state dict as torch.save writes it: an OrderedDict of
 * tensors rebuilt by torch._utils._rebuild_tensor_v2 from persistent storages.
 */
export function stateDictPickle(tensors: { name: string; storage: string; shape: [number, number] }[]): Buffer {
  const p = new PickleBuilder().proto(2).global("collections", "OrderedDict").emptyTuple().reduce().mark();
  for (const t of tensors) {
    p.unicode(t.name)
      .global("torch._utils", "_rebuild_tensor_v2")
      .mark()
      // persistent id: ("storage", torch.FloatStorage, key, "cpu", numel)
      .mark()
      .unicode("storage")
      .global("torch", "FloatStorage")
      .unicode(t.storage)
      .unicode("cpu")
      .int(t.shape[0] * t.shape[1])
      .tuple()
      .binpersid()
      .int(0)
      .int(t.shape[0])
      .int(t.shape[1])
      .tuple2()
      .int(t.shape[1])
      .int(1)
      .tuple2()
      .bool(false)
      .global("collections", "OrderedDict")
      .emptyTuple()
      .reduce()
      .tuple()
      .reduce();
  }
  return p.setitems().stop().bytes();
}
