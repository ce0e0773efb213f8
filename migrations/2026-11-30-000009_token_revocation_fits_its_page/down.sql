ALTER TABLE access_tokens SET (fillfactor = 50);
