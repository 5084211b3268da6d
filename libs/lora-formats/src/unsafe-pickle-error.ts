/**
 * Thrown when a pickle uses a construct outside the weights-only grammar: an opcode, a global or a call that
 * torch's `weights_only` unpickler refuses, and that a full unpickler could use to run code. The message names
 * the construct and where it is; `global` is set when the construct is an import.
 */
export class UnsafePickleError extends Error {
  override readonly name = "UnsafePickleError";
  constructor(
    message: string,
    readonly construct: string,
    readonly global?: string,
  ) {
    super(message);
  }
}
