"""Small synthetic tasks for checking that a GPT really learns: no file needed.

Each task is a family of problems written as short character strings,

    prompt + answer + END

for example "17+25=" + "240" + "." for addition. A model is trained to
continue the prompt with the answer; how well it does is measured by exact
match on problems it never saw in training. Loss goes only on the answer
(and END): the prompt digits are random, so predicting them teaches nothing
and would only add noise to the loss curve.

Every problem in a task has the same length, so batches need no padding and
block_size is fixed: len(prompt) + len(answer) + 1 (END) - 1 (the last token
is only ever a target, never an input).

The held-out problems are chosen once from the seed, and training batches
never contain them, so the accuracy reported by `evaluate` measures
generalisation rather than memory.
"""

import numpy as np

IGNORE_INDEX = -100
END = "."


class SyntheticTask:
    """Shared machinery; a subclass defines the problem set and how to write one.

    Problems are numbered 0 .. n_problems-1, and a subclass turns a number
    into its (prompt, answer) strings. Numbering them lets the held-out split
    be a seeded sample of numbers, and lets training sample a uniformly random
    problem with one call to the Generator.

    n_heldout defaults to min(1000, n_problems // 10).

    Subclasses set: chars (the vocabulary, one character per token),
    n_problems, prompt_len, answer_len (digits only, END excluded), and
    implement _problem(number) -> (prompt, answer).
    """

    chars = ""
    n_problems = 0
    prompt_len = 0
    answer_len = 0

    def __init__(self, seed=0, n_heldout=None):
        self.seed = seed
        self.stoi = {ch: i for i, ch in enumerate(self.chars)}
        self.vocab_size = len(self.chars)
        if n_heldout is None:
            # Enough problems for a steady accuracy estimate, and never more
            # than a tenth of a small task.
            n_heldout = min(1000, self.n_problems // 10)
        # Keep most problems for training: with fewer than half left the
        # rejection sampling in get_batch would also slow down.
        if not 1 <= n_heldout <= self.n_problems // 2:
            raise ValueError(f"n_heldout must be in [1, {self.n_problems // 2}] "
                             f"for this task ({self.n_problems} problems), got {n_heldout}")
        rng = np.random.default_rng(seed)
        self.heldout_ids = rng.choice(self.n_problems, size=n_heldout, replace=False)
        self._heldout_sorted = np.sort(self.heldout_ids)
        # One character per token; the last token of a sequence is only a target.
        self.seq_len = self.prompt_len + self.answer_len + 1
        self.block_size = self.seq_len - 1
        self.n_new = self.answer_len + 1  # tokens to generate: the answer and END

    # -- text <-> ids -------------------------------------------------------

    def encode(self, s):
        """String -> int64 ids. Raises ValueError on a character outside the vocabulary."""
        try:
            return np.array([self.stoi[ch] for ch in s], dtype=np.int64)
        except KeyError as e:
            raise ValueError(f"{e.args[0]!r} is not in this task's vocabulary {self.chars!r}") from None

    def decode(self, ids):
        """ids -> string."""
        return "".join(self.chars[int(i)] for i in ids)

    # -- problems -----------------------------------------------------------

    def _problem(self, number):
        raise NotImplementedError

    def problem(self, number):
        """(prompt, answer) strings of problem `number`; the answer ends with END."""
        prompt, answer = self._problem(int(number))
        return prompt, answer + END

    def is_heldout(self, numbers):
        """Boolean array: which of these problem numbers are held out."""
        numbers = np.asarray(numbers)
        pos = np.searchsorted(self._heldout_sorted, numbers)
        pos = np.minimum(pos, len(self._heldout_sorted) - 1)
        return self._heldout_sorted[pos] == numbers

    def sample_train_ids(self, n, rng):
        """n uniformly random problem numbers, none of them held out."""
        ids = rng.integers(0, self.n_problems, size=n)
        # Redraw only the held-out hits. At most half the problems are held
        # out, so each round at least halves the hits on average.
        while (hit := self.is_heldout(ids)).any():
            ids[hit] = rng.integers(0, self.n_problems, size=int(hit.sum()))
        return ids

    def _sequences(self, numbers):
        return np.stack([self.encode("".join(self.problem(k))) for k in numbers])

    def get_batch(self, batch_size, rng):
        """A training batch (x, y), int64 (batch_size, block_size).

        y is x shifted by one. y is IGNORE_INDEX (-100) wherever the next token
        is still part of the prompt, so only the answer and END are scored.
        The same Generator state gives the same batch.
        """
        return self.examples(self.sample_train_ids(batch_size, rng))

    def examples(self, numbers):
        """(x, y) int64 (len(numbers), block_size) of these problems, as get_batch makes
        them: y is x shifted by one, IGNORE_INDEX over the prompt."""
        seqs = self._sequences(numbers)
        x = seqs[:, :-1].copy()
        y = seqs[:, 1:].copy()
        # y[:, t] is token t+1; tokens 1 .. prompt_len-1 belong to the prompt.
        y[:, : self.prompt_len - 1] = IGNORE_INDEX
        return x, y

    # -- evaluation ---------------------------------------------------------

    def heldout_prompts(self, n=None):
        """(prompts (N, prompt_len), answers (N, n_new)) int64 for the first n held-out problems."""
        numbers = self.heldout_ids if n is None else self.heldout_ids[:n]
        seqs = self._sequences(numbers)
        return seqs[:, : self.prompt_len], seqs[:, self.prompt_len:]

    def evaluate(self, predict_fn, n=None, batch_size=256):
        """Exact-match accuracy on held-out problems, in [0, 1].

        predict_fn(prompts, n_new) gets int64 prompts (N, prompt_len) and must
        return (N, n_new) token ids, its greedy continuation. A problem counts
        as solved only if every answer token and the END token are right.
        Prompts are passed in chunks of batch_size to bound the model's memory.
        """
        prompts, answers = self.heldout_prompts(n)
        correct = 0
        for i in range(0, len(prompts), batch_size):
            p = prompts[i:i + batch_size]
            out = np.asarray(predict_fn(p.copy(), self.n_new))
            if out.shape != (len(p), self.n_new):
                raise ValueError(f"predict_fn returned shape {out.shape}, "
                                 f"expected {(len(p), self.n_new)}")
            correct += int(np.all(out == answers[i:i + batch_size], axis=1).sum())
        return correct / len(prompts)


class AdditionTask(SyntheticTask):
    """Add two n_digits-digit numbers; the sum is written backwards.

    Example with n_digits=2, 17 + 25 = 42:

        "17+25=240."
         prompt "17+25="   answer "240"   END "."

    Operands are zero-padded to n_digits ("05+03=800.") and the sum to
    n_digits + 1 digits, so every problem has the same length. The sum is
    written least-significant digit first because that is the order in which
    the digits can be computed: each digit then depends only on the operand
    digits at that place and the carry from the digit the model has just
    written. Written most-significant first, the first digit would depend on
    every carry at once, which a small GPT learns far more slowly.

    Vocabulary: "0123456789+=." (13 tokens). n_digits=2 has 10,000 problems,
    n_digits=3 has 1,000,000. a+b and b+a are different problems, so one may
    be held out while the other is trained on.
    """

    chars = "0123456789+=" + END

    def __init__(self, n_digits=2, seed=0, n_heldout=None):
        if n_digits < 1:
            raise ValueError(f"n_digits must be >= 1, got {n_digits}")
        self.n_digits = n_digits
        self.n_problems = 10 ** (2 * n_digits)
        self.prompt_len = 2 * n_digits + 2      # "aa+bb="
        self.answer_len = n_digits + 1          # the sum can carry into one more digit
        super().__init__(seed=seed, n_heldout=n_heldout)

    def _problem(self, number):
        a, b = divmod(number, 10 ** self.n_digits)
        n = self.n_digits
        return f"{a:0{n}d}+{b:0{n}d}=", f"{a + b:0{n + 1}d}"[::-1]


class SortTask(SyntheticTask):
    """Sort a sequence of symbols (repeats allowed) into alphabet order.

    Example with length=6 and the default alphabet "0123456789":

        "314159=113459."
         prompt "314159="   answer "113459"   END "."

    The alphabet fixes the order: with alphabet="dcba", "abcd" sorts to
    "dcba". Every sequence of `length` symbols is a problem, so there are
    len(alphabet) ** length of them. Vocabulary: the alphabet, "=" and ".".
    """

    def __init__(self, length=6, alphabet="0123456789", seed=0, n_heldout=None):
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        if len(set(alphabet)) != len(alphabet) or len(alphabet) < 2:
            raise ValueError(f"alphabet needs at least 2 distinct symbols, got {alphabet!r}")
        if "=" in alphabet or END in alphabet:
            raise ValueError(f"'=' and {END!r} are separators and cannot be in the alphabet")
        self.length = length
        self.alphabet = alphabet
        self.chars = alphabet + "=" + END
        self.n_problems = len(alphabet) ** length
        if self.n_problems >= 2 ** 62:
            raise ValueError("too many problems to number in int64: use a shorter length")
        self.prompt_len = length + 1
        self.answer_len = length
        super().__init__(seed=seed, n_heldout=n_heldout)

    def _problem(self, number):
        # The problem number, written in base len(alphabet), is the sequence.
        k = len(self.alphabet)
        digits = []
        for _ in range(self.length):
            number, d = divmod(number, k)
            digits.append(d)
        seq = "".join(self.alphabet[d] for d in digits)
        return seq + "=", "".join(self.alphabet[d] for d in sorted(digits))
