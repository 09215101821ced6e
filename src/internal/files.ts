/** Files that readers never see half-written. */
import * as fs from 'node:fs';

/** Writes `text` to `<file>.partial`, then renames it over `file`; on failure the partial file is removed. */
export async function writeFileAtomically(file: string, text: string): Promise<void> {
  const partial = `${file}.partial`;
  try {
    await fs.promises.writeFile(partial, text);
    await fs.promises.rename(partial, file);
  } catch (err) {
    await fs.promises.rm(partial, { force: true }).catch(() => undefined);
    throw err;
  }
}
