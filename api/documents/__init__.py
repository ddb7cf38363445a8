"""Documents in chats: the bytes of `user_data` files (blob store), their text read once in a
bounded process (extraction), and the file parts of chat requests turned into DocumentRefs."""
