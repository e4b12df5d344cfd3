"""The pipeline's own errors: caught once at the CLI and turned into one line and an exit code."""


class PipelineError(Exception):
    """A problem the user can act on; the message names the file or setting at fault."""

    exit_code = 1


class ConfigError(PipelineError):
    """An option or profile setting that no run can use."""

    exit_code = 2


class DataError(PipelineError):
    """A data file is missing, truncated, of the wrong format or fails its checksum."""

    exit_code = 2


class GateError(PipelineError):
    """An exported artifact failed the parity gate: nothing is promoted."""

    exit_code = 3


class ModelError(PipelineError):
    """A user's model (`export --keras-model`) that cannot be read, is not a Fashion-MNIST classifier, or
    cannot be rebuilt: the message names the file, what was found and what is expected."""

    exit_code = 2
