"""Launch files and parameter files name only what the package installs and the node declares.

The ``launch`` package cannot be installed from pip, so the launch files are read as Python
syntax trees; the names they use are checked against a real GeneratorNode.
"""

from __future__ import annotations

import ast
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from rclpy.parameter import Parameter

from aapt_ros.eval.live import NodeProcess
from aapt_ros.node.generator_node import GeneratorNode

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((REPO / 'launch').glob('*.launch.py'))
CONFIG_FILES = sorted(p for p in (REPO / 'config').glob('*.yaml') if 'ros__parameters' in p.read_text())  # node files
REQUIRED_LAUNCH_ARGUMENTS = {'model', 'device', 'namespace', 'use_sim_time', 'params_file'}


@pytest.fixture(scope='module')
def node(tiny_model: Path, ros_context: None) -> Iterator[GeneratorNode]:
    node = GeneratorNode(parameter_overrides=[Parameter('model_path', Parameter.Type.STRING, str(tiny_model))])
    yield node
    node.destroy_node()


def installed_executables() -> set[str]:
    """Executables under lib/aapt_ros: scripts/ (colcon and pip data_files) and console scripts."""
    setup = (REPO / 'setup.py').read_text()
    cmake = (REPO / 'CMakeLists.txt').read_text()
    scripts = {p.name for p in (REPO / 'scripts').iterdir()}
    assert all(f'scripts/{name}' in cmake for name in scripts), 'CMakeLists.txt must install every script'
    console = set(re.findall(r"'([\w-]+) = aapt_ros[\w.]*:main'", setup))
    return scripts & console


def node_calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, 'id', None) == 'Node']


def keyword(call: ast.Call, name: str) -> ast.expr:
    return next(k.value for k in call.keywords if k.arg == name)


def launch_configurations(tree: ast.AST) -> set[str]:
    return {
        n.args[0].value
        for n in ast.walk(tree)  # type: ignore[attr-defined]
        if isinstance(n, ast.Call) and getattr(n.func, 'id', None) == 'LaunchConfiguration'
    }


def declared_arguments(tree: ast.AST) -> set[str]:
    return {
        n.args[0].value
        for n in ast.walk(tree)  # type: ignore[attr-defined]
        if isinstance(n, ast.Call) and getattr(n.func, 'id', None) == 'DeclareLaunchArgument'
    }


def test_there_is_a_launch_file_and_a_parameters_file() -> None:
    assert LAUNCH_FILES and CONFIG_FILES


@pytest.mark.parametrize('path', LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_starts_installed_executables_of_this_package(path: Path) -> None:
    calls = node_calls(ast.parse(path.read_text()))
    assert calls
    for call in calls:
        assert ast.literal_eval(keyword(call, 'package')) == 'aapt_ros'
        assert ast.literal_eval(keyword(call, 'executable')) in installed_executables()


@pytest.mark.parametrize('path', LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_sets_only_declared_parameters(path: Path, node: GeneratorNode) -> None:
    declared = set(node.list_parameters([], 0).names)
    for call in node_calls(ast.parse(path.read_text())):
        for entry in keyword(call, 'parameters').elts:  # type: ignore[attr-defined]
            if isinstance(entry, ast.Dict):
                names = {ast.literal_eval(k) for k in entry.keys if k is not None}
                assert names <= declared, names - declared


@pytest.mark.parametrize('path', LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_remaps_only_names_the_node_uses(path: Path, node: GeneratorNode) -> None:
    used = {t.topic_name.rsplit('/', 1)[-1] for t in (*node.subscriptions, *node.publishers)}
    used |= {s.srv_name.rsplit('/', 1)[-1] for s in node.services}
    used |= {'cmd_vel'}  # subscribed only with action_source twist or twist_stamped
    for call in node_calls(ast.parse(path.read_text())):
        for pair in keyword(call, 'remappings').elts:  # type: ignore[attr-defined]
            assert ast.literal_eval(pair.elts[0]) in used


@pytest.mark.parametrize('path', LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_arguments_are_declared_and_include_the_documented_ones(path: Path) -> None:
    tree = ast.parse(path.read_text())
    assert launch_configurations(tree) <= declared_arguments(tree)
    assert declared_arguments(tree) >= REQUIRED_LAUNCH_ARGUMENTS
    shared_files = re.findall(r"FindPackageShare\('aapt_ros'\), '(\w+)', '([\w.]+)'", path.read_text())
    for folder, name in shared_files:
        assert (REPO / folder / name).is_file()


@pytest.mark.parametrize('path', CONFIG_FILES, ids=lambda p: p.name)
def test_parameters_file_names_only_declared_parameters(path: Path, node: GeneratorNode) -> None:
    data = yaml.safe_load(path.read_text())
    params = data['/**']['ros__parameters']
    declared = set(node.list_parameters([], 0).names)
    assert set(params) <= declared, set(params) - declared
    for name, value in params.items():  # same types as the declarations, or the node would refuse them
        assert type(value) is type(node.get_parameter(name).value), name


def test_every_declared_parameter_has_a_description(node: GeneratorNode) -> None:
    own = set(node.list_parameters([], 0).names) - {'use_sim_time', 'start_type_description_service'}
    for descriptor in node.describe_parameters(sorted(own)):
        assert descriptor.description, descriptor.name


def test_node_starts_from_the_parameters_file(tiny_model: Path, tmp_path: Path, ros_context: None) -> None:
    with NodeProcess(
        {'model_path': str(tiny_model)}, params_file=REPO / 'config' / 'generator.yaml', log_path=tmp_path / 'node.log'
    ) as process:
        end = time.monotonic() + 60
        while "model 'tiny-test'" not in process.log_text():
            assert process.running() and time.monotonic() < end, process.log_tail()
            time.sleep(0.1)
