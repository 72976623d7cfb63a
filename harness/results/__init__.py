"""Result rows: their schema, the files they are written to, and the tables made from them."""
