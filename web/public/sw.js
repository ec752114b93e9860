// Keeps the page itself available offline: everything the build lists in precache.json is cached
// at install; the page's own address is answered from the network first (a new build shows at
// once) and from the cache when the server cannot be reached. The model is not here: it lives in
// IndexedDB, encrypted (src/store.js). API calls (/v1/...) are never touched.
const CACHE = "tandem-app-v1";
const scope = new URL(self.registration.scope);

self.addEventListener("install", (event) => {
  event.waitUntil(
    (async () => {
      const list = await (await fetch(new URL("precache.json", scope), { cache: "no-store" })).json();
      const cache = await caches.open(CACHE);
      await cache.addAll(list.map((p) => new URL(p, scope).href));
      await self.skipWaiting();
    })(),
  );
});

self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== scope.origin || !url.pathname.startsWith(scope.pathname)) return;
  const page = url.pathname === scope.pathname || url.pathname.endsWith("/index.html");
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      if (!page) {
        const hit = await cache.match(event.request, { ignoreSearch: true });
        if (hit) return hit;
      }
      try {
        const resp = await fetch(event.request);
        if (resp.ok && page) await cache.put(scope.href, resp.clone());
        return resp;
      } catch (e) {
        const hit = await cache.match(page ? scope.href : event.request, { ignoreSearch: true });
        if (hit) return hit;
        throw e;
      }
    })(),
  );
});
