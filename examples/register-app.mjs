// An app that does not know about sysprobe: no import, no code. Run it with sysprobe anyway:
//
//   npm run build
//   SYSPROBE_SERVICE_NAME=orders SYSPROBE_PROMETHEUS_PORT=9464 node --import sysprobe/register examples/register-app.mjs
//   curl localhost:9464/metrics
//
// (`node -r sysprobe/register` works too; all variables: docs/register.md.) Env: PORT (default 3000).
import http from 'node:http';

const server = http.createServer((req, res) => {
  if (req.url === '/work') {
    const end = Date.now() + 20; // 20 ms of CPU
    while (Date.now() < end);
  }
  res.end('hello\n');
});
server.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`register-app listening on http://127.0.0.1:${server.address().port}/`);
});
process.once('SIGTERM', () => server.close());
