"""OpenAI's bounds on a `metadata` object (a conversation's, a batch's): the api refuses more,
and the ui keeps what it writes there within them."""

METADATA_PAIRS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512
