/**
 * Thrown by the parsers when content is not a well-formed file of the expected format.
 * The message is written for the person who uploaded the file.
 */
export class FormatError extends Error {
  override readonly name = "FormatError";
}
