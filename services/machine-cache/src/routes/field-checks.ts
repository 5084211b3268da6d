import { ErrorReason } from "@emprops/contracts";
import { invalidArgument } from "@emprops/platform";

/** Free-text fields have a length limit; the error names the field. */
export function checkLength(field: string, value: string, max: number): void {
  if (value.length > max) {
    throw invalidArgument(ErrorReason.INVALID_REQUEST, `${field} is longer than ${max} characters`, { field });
  }
}
