/**
 * `node -r sysprobe/register app.js` (and, through esm/register.mjs, `node --import sysprobe/register`):
 * starts sysprobe with no code change, configured by SYSPROBE_* environment variables
 * (docs/register.md). It never throws into the host: a bad variable is one stderr line and the
 * app runs without sysprobe. The probe is then `registeredProbe()`, or
 * `globalThis[Symbol.for('sysprobe.probe')]` for code that does not import sysprobe.
 * @module
 */
import { autoStart } from './probe/auto-start.js';

void autoStart();
