/**
 * The least a Node process in the middle of a blob GET can cost: node:http's response of an
 * upstream GET piped into node:http's response, nothing else (no routing, no auth, no SDK).
 * Figure 8 runs it on the same path as the registry, started as `npm start` starts the
 * registry (its Node flags and GLIBC_TUNABLES), to show how far above that floor Skiff is.
 * `FLOOR_UPSTREAM` is the URL every request fetches (a presigned GetObject).
 */
import { createServer, get } from 'node:http';

const upstream = process.env.FLOOR_UPSTREAM!;
const server = createServer((_req, res) => {
  get(upstream, (up) => {
    res.writeHead(up.statusCode ?? 502, { 'Content-Length': up.headers['content-length'] });
    up.pipe(res);
  }).on('error', () => res.destroy());
});
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as { port: number };
  process.stdout.write(`listening on http://127.0.0.1:${port}/\n`);
});
