// The app's service worker: keeps the app's files so that the app opens
// when the terminal is briefly out of reach (it still needs the terminal
// to pay). Network first, so a terminal's update is used at once; the
// kept copy only when the network fails. Nothing else is kept: nexo
// messages and the terminal's facts always go to the terminal.

const CACHE = "posnet-app-v2";
const SHELL = [
  "/app/",
  "/app/app.css",
  "/app/app.js",
  "/app/nexo.js",
  "/app/pairing.js",
  "/app/messages.js",
  "/app/store.js",
  "/app/office.js",
  "/app/terminal.js",
  "/app/manifest.webmanifest",
  "/app/icon.svg",
];

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(SHELL))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((names) => Promise.all(names.filter((n) => n !== CACHE).map((n) => caches.delete(n))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin || !SHELL.includes(url.pathname)) return;
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        if (response.ok) {
          const copy = response.clone();
          event.waitUntil(caches.open(CACHE).then((cache) => cache.put(event.request, copy)));
        }
        return response;
      })
      .catch(() => caches.match(event.request).then((kept) => kept ?? Response.error())),
  );
});
