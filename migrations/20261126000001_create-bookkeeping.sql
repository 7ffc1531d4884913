-- Tables of the store itself, beside the XenAPI object tables.
-- _meta: private settings (the current generation, first-start facts).
-- _tombstone: one row per deleted object, so event clients learn of deletions since any generation.
-- _local_user: local users and their argon2 password hashes (never the password itself).
CREATE TABLE "_meta" (
  "key" TEXT PRIMARY KEY NOT NULL,
  "value" TEXT NOT NULL
);
CREATE TABLE "_tombstone" (
  "id" INTEGER PRIMARY KEY AUTOINCREMENT,
  "generation" INTEGER NOT NULL,
  "class" TEXT NOT NULL,
  "ref" TEXT NOT NULL,
  "uuid" TEXT NOT NULL
);
CREATE INDEX "_tombstone_generation" ON "_tombstone"("generation");
CREATE TABLE "_local_user" (
  "name" TEXT PRIMARY KEY NOT NULL,
  "password_hash" TEXT NOT NULL
);
