// What the app keeps in the browser, in IndexedDB of the terminal's origin
// (docs/phone-app.md, "Security"): the pairing with its keys as
// non-extractable CryptoKeys (the passphrase itself is not kept), this
// installation's SaleID and ServiceID counter, and the history of its
// exchanges. Every exchange is written before it is sent.

const DB_NAME = "posnet-phone";
const DB_VERSION = 1;
/// Exchanges kept; the oldest go first. A phone's day is far fewer.
export const HISTORY_LIMIT = 500;

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
  });
}

/// The app's database.
export class Store {
  static async open() {
    const req = indexedDB.open(DB_NAME, DB_VERSION);
    req.onupgradeneeded = () => {
      const db = req.result;
      db.createObjectStore("settings");
      const history = db.createObjectStore("history", { keyPath: "serviceId" });
      history.createIndex("startedAt", "startedAt");
    };
    return new Store(await request(req));
  }

  constructor(db) {
    this.db = db;
  }

  async get(name) {
    return request(this.db.transaction("settings").objectStore("settings").get(name));
  }

  async set(name, value) {
    const tx = this.db.transaction("settings", "readwrite");
    tx.objectStore("settings").put(value, name);
    await done(tx);
  }

  /// The pairing, or undefined.
  pairing() {
    return this.get("pairing");
  }

  /// Keeps `pairing` (replacing any other: the app served by a terminal
  /// pays through that terminal only).
  savePairing(pairing) {
    return this.set("pairing", pairing);
  }

  async forgetPairing() {
    const tx = this.db.transaction("settings", "readwrite");
    tx.objectStore("settings").delete("pairing");
    await done(tx);
  }

  /// This installation's SaleID, made at first use: `PWA-` and 8 random
  /// hex digits. A browser whose storage was cleared is a new Sale
  /// system, so its new ServiceIDs never repeat one the terminal saw.
  async saleId() {
    const tx = this.db.transaction("settings", "readwrite");
    const settings = tx.objectStore("settings");
    let id = await request(settings.get("saleId"));
    if (!id) {
      const bytes = globalThis.crypto.getRandomValues(new Uint8Array(4));
      id = `PWA-${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
      settings.put(id, "saleId");
    }
    await done(tx);
    return id;
  }

  /// Starts exchange `record` (`{kind, ...}`): takes the next ServiceID
  /// (10 digits, nexo's longest) and writes the record with it, state
  /// `sent`, in one transaction, before anything is sent. The ServiceID.
  async begin(record) {
    const tx = this.db.transaction(["settings", "history"], "readwrite");
    const settings = tx.objectStore("settings");
    const next = ((await request(settings.get("nextServiceId"))) ?? 1) % 1e10;
    settings.put(next + 1, "nextServiceId");
    const serviceId = String(next).padStart(10, "0");
    tx.objectStore("history").put({ ...record, serviceId, state: "sent", startedAt: new Date().toISOString() });
    await done(tx);
    await this.trim();
    return serviceId;
  }

  /// Records what became of exchange `serviceId`.
  async finish(serviceId, outcome) {
    const tx = this.db.transaction("history", "readwrite");
    const history = tx.objectStore("history");
    const record = await request(history.get(serviceId));
    if (record) history.put({ ...record, ...outcome, finishedAt: new Date().toISOString() });
    await done(tx);
  }

  async exchange(serviceId) {
    return request(this.db.transaction("history").objectStore("history").get(serviceId));
  }

  /// The history, newest first.
  async history() {
    const all = await request(this.db.transaction("history").objectStore("history").index("startedAt").getAll());
    return all.reverse();
  }

  async trim() {
    const tx = this.db.transaction("history", "readwrite");
    const index = tx.objectStore("history").index("startedAt");
    const count = await request(index.count());
    if (count > HISTORY_LIMIT) {
      let extra = count - HISTORY_LIMIT;
      const cursor = index.openCursor();
      cursor.onsuccess = () => {
        const c = cursor.result;
        if (c && extra-- > 0) {
          c.delete();
          c.continue();
        }
      };
    }
    await done(tx);
  }
}
