"""The errors deepdive raises for bad recipes and bad data.

Each carries one sentence that names the file or field at fault and what would be valid. The recipe
scripts catch them at the top and print that sentence alone, so a user never reads a traceback for a typo.
"""


class DeepdiveError(ValueError):
    """A problem with the user's input, reported as one line before any training starts."""


class RecipeError(DeepdiveError):
    """A recipe field is unknown, ill-typed or out of range."""


class DataError(DeepdiveError):
    """A corpus, dataset or data file cannot be used."""


class TrainingError(DeepdiveError):
    """Training had to stop (e.g. a non-finite loss); the message says where and what to resume from."""
