// The Node.js peer of bench/run: what a user might write instead of tally.
// GET /:id atomically INCRs a Redis counter and answers {"count":N}. fastify for HTTP, ioredis
// with auto-pipelining (concurrent commands share one write), one Redis connection per worker,
// WORKERS cluster workers (default 2, one per core here).
// Env: PORT, HOST (127.0.0.1), REDIS_PORT, REDIS_HOST (127.0.0.1), REDIS_PASSWORD,
// KEY_PREFIX ("node:"), WORKERS (2).
'use strict';

const cluster = require('node:cluster');

const workers = Number(process.env.WORKERS || 2);

if (cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  let stopping = false;
  cluster.on('exit', (worker, code, signal) => {
    if (!stopping) {
      console.error(`worker ${worker.process.pid} died (${signal || code}); stopping`);
      process.exit(1);
    }
  });
  const stop = () => {
    stopping = true;
    for (const w of Object.values(cluster.workers)) w.kill('SIGTERM');
    setTimeout(() => process.exit(0), 2000).unref();
    cluster.disconnect(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  const Fastify = require('fastify');
  const Redis = require('ioredis');

  const redis = new Redis({
    host: process.env.REDIS_HOST || '127.0.0.1',
    port: Number(process.env.REDIS_PORT || 6379),
    password: process.env.REDIS_PASSWORD || undefined,
    enableAutoPipelining: true,
    // Fail a request rather than queue it forever while Redis is away.
    maxRetriesPerRequest: 1,
  });
  const prefix = process.env.KEY_PREFIX || 'node:';

  const app = Fastify({ logger: false });
  app.get('/:id', async (request, reply) => {
    const count = await redis.incr(prefix + request.params.id);
    reply.header('cache-control', 'no-store');
    return { count };
  });

  app
    .listen({ port: Number(process.env.PORT || 3000), host: process.env.HOST || '127.0.0.1' })
    .catch((err) => {
      console.error(err);
      process.exit(1);
    });
  process.on('SIGTERM', () => {
    app.close().then(() => redis.quit()).finally(() => process.exit(0));
  });
}
