// `node --import sysprobe/register app.js`: the same start as `-r sysprobe/register`, from the one CommonJS build.
import '../dist/src/register.js';
