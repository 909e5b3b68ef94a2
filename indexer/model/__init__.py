"""The CLAP model: loading (local folder or hub cache), the fast mel front end, embedding, and a
tiny CLAP for tests and demos. The only package that imports torch and transformers."""
