// Express ships no types and @types/express is not a dependency; the tests use it through node:http types.
declare module 'express';
