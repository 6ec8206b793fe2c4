"""Special token ids shared by the tokenizer, the models and decoding.

Id 0 is padding everywhere and is never a real token: masks are derived from ``ids != PAD_ID``.
"""

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3
