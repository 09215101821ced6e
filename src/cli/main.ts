#!/usr/bin/env node
/**
 * The `sysprobe` command. Each verb lives in its own module under src/cli/ and is
 * registered in VERBS; this file only dispatches and turns failures into exit codes.
 *
 * Exit codes (scripts branch on them):
 *   0  done
 *   1  the input could not be used (not a heap snapshot, truncated, corrupt, missing)
 *   2  usage error (unknown verb or flag, missing argument)
 *   3  internal error (a bug: please report it)
 */
import { CliError, ExitCode, type Verb } from './cli-common.js';

/** Verb name → its module, loaded only when used so `sysprobe --help` stays instant. */
const VERBS: Record<string, () => Promise<Verb>> = {
  report: async () => (await import('./report.js')).verb,
  heap: async () => (await import('./heap.js')).verb,
  doctor: async () => (await import('./doctor.js')).verb,
};

function usage(): string {
  const names = Object.keys(VERBS).sort();
  return [
    'usage: sysprobe <verb> [arguments]',
    '',
    'verbs:',
    ...(names.length ? names.map((n) => `  ${n}`) : ['  (none)']),
    '',
    "Run `sysprobe <verb> --help` for a verb's arguments.",
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(`${usage()}\n`);
    return name === undefined ? ExitCode.USAGE : ExitCode.OK;
  }
  const load = VERBS[name];
  if (!load) {
    process.stderr.write(`sysprobe: unknown verb "${name}"\n\n${usage()}\n`);
    return ExitCode.USAGE;
  }
  try {
    const verb = await load();
    return await verb.run(rest);
  } catch (err) {
    if (err instanceof CliError) {
      process.stderr.write(`sysprobe ${name}: ${err.message}\n`);
      return err.exitCode;
    }
    process.stderr.write(
      `sysprobe ${name}: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    return ExitCode.INTERNAL;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    () => {
      process.exitCode = ExitCode.INTERNAL;
    },
  );
}
