// Resolve the golden cases through a stock OpenFeature OFREP provider against a running `rollout serve`.
//
//   node resolve.mjs server|web <base-url> <token> <cases.json>
//
// Prints one JSON line: [{name, value, variant, reason, errorCode, flagMetadata}, ...] in the cases' order.
// `server`: @openfeature/server-sdk + @openfeature/ofrep-provider (dynamic context, one request per flag).
// `web`: @openfeature/web-sdk + @openfeature/ofrep-web-provider (static context, bulk evaluation), run in Node,
// which has fetch; the provider keeps no cache (cacheMode 'disabled') and does not poll (pollInterval 0).
import { readFileSync } from 'node:fs';

const [mode, baseUrl, token, casesPath] = process.argv.slice(2);
const cases = JSON.parse(readFileSync(casesPath, 'utf8'));
const CODE_DEFAULT = '<code default>';

function contextOf(c) {
  const ctx = { ...(c.attributes ?? {}) };
  // OpenFeature's targeting key is text: an integer unit id goes as its decimal text, as any SDK sends it.
  if (c.unit_id !== null && c.unit_id !== undefined) ctx.targetingKey = String(c.unit_id);
  return ctx;
}

function row(c, d) {
  return { name: c.name, value: d.value, variant: d.variant ?? null, reason: d.reason ?? null,
           errorCode: d.errorCode ?? null, flagMetadata: d.flagMetadata ?? {} };
}

async function server() {
  const { OpenFeature } = await import('@openfeature/server-sdk');
  const { OFREPProvider } = await import('@openfeature/ofrep-provider');
  await OpenFeature.setProviderAndWait(new OFREPProvider({ baseUrl, headers: [['Authorization', `Bearer ${token}`]] }));
  const client = OpenFeature.getClient();
  const out = [];
  for (const c of cases) {
    out.push(row(c, await client.getStringDetails(c.flag, c.default ?? CODE_DEFAULT, contextOf(c))));
  }
  await OpenFeature.close();
  return out;
}

async function web() {
  const { OpenFeature } = await import('@openfeature/web-sdk');
  const { OFREPWebProvider } = await import('@openfeature/ofrep-web-provider');
  const provider = new OFREPWebProvider({ baseUrl, headers: [['Authorization', `Bearer ${token}`]],
                                          pollInterval: 0, cacheMode: 'disabled', changeDetection: 'none' });
  await OpenFeature.setProviderAndWait(provider);
  const client = OpenFeature.getClient();
  const out = [];
  for (const c of cases) {
    await OpenFeature.setContext(contextOf(c));  // a static-context provider re-fetches every flag for it
    out.push(row(c, client.getStringDetails(c.flag, c.default ?? CODE_DEFAULT)));
  }
  await OpenFeature.close();
  return out;
}

const results = await (mode === 'web' ? web() : server());
process.stdout.write(JSON.stringify(results) + '\n');
