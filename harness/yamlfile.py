"""YAML files read for validation: the data, plus the line of every field so errors can say file:line."""

from pathlib import Path

import yaml

from harness.errors import ConfigError


class YamlDoc:
    """A parsed YAML file and the line of each of its fields (`line`), for errors that name FILE:LINE."""

    def __init__(self, file: Path):
        self.file = Path(file)
        try:
            text = self.file.read_text()
        except OSError as exc:
            raise ConfigError(f"{self.file}: cannot read: {exc.strerror}") from None
        try:
            self._root = yaml.compose(text, Loader=yaml.SafeLoader)
            self.data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{self.file}:{mark.line + 1}" if mark else str(self.file)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{where}: invalid YAML: {problem}") from None

    def line(self, path: tuple) -> int | None:
        """1-based line of the field at `path` (keys and list indexes), or of its nearest existing parent."""
        node, line = self._root, None
        if node is not None:
            line = node.start_mark.line + 1
        for step in path:
            if isinstance(node, yaml.MappingNode):
                match = next(((k, v) for k, v in node.value if k.value == step), None)
                if match is None:
                    break
                line, node = match[0].start_mark.line + 1, match[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
                node = node.value[step]
                line = node.start_mark.line + 1
            else:
                break
        return line
