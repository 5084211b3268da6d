const PREFIX = "emprops.lora-library.upload:";

/** Same name, size and modification time: the same file as far as resuming goes. */
export function fileFingerprint(userId: string, file: File): string {
  return `${PREFIX}${userId}:${file.name}:${file.size}:${file.lastModified}`;
}

/**
 * Upload ids of unfinished uploads by file, in localStorage: dropping the
 * same file again (even after a reload) resumes its upload.
 */
export const resumeStore = {
  get(key: string): string | undefined {
    return localStorage.getItem(key) ?? undefined;
  },
  set(key: string, uploadId: string): void {
    localStorage.setItem(key, uploadId);
  },
  delete(key: string): void {
    localStorage.removeItem(key);
  },
};
