"""What pip and colcon install: executables where `ros2 run` looks, share files, dependencies."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROS_PACKAGES_IN_PIP = {
    'rclpy',
    'std_msgs',
    'sensor_msgs',
    'geometry_msgs',
    'std_srvs',
    'diagnostic_msgs',
    'builtin_interfaces',
    'rcl_interfaces',
    'ament_index_python',
    'rosgraph_msgs',
}


@pytest.fixture(scope='module')
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp('wheel')
    # Build from a copy of the tracked files: an in-tree build would pick up stale files in build/.
    source = tmp_path_factory.mktemp('source')
    tracked = subprocess.run(['git', 'ls-files', '-z'], cwd=REPO, check=True, capture_output=True).stdout
    for name in filter(None, tracked.decode().split('\0')):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', str(out), str(source)],
        check=True,
        capture_output=True,
    )
    return zipfile.ZipFile(next(out.glob('aapt_ros-*.whl')))


def test_wheel_installs_the_node_where_ros2_run_finds_it(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    data = 'aapt_ros-0.1.0.data/data/'
    assert f'{data}lib/aapt_ros/generator_node' in names
    assert wheel.getinfo(f'{data}lib/aapt_ros/generator_node').external_attr >> 16 & 0o111  # executable
    assert f'{data}share/ament_index/resource_index/packages/aapt_ros' in names
    assert f'{data}share/aapt_ros/package.xml' in names


def test_wheel_carries_launch_config_default_model_and_demo_bag(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    data = 'aapt_ros-0.1.0.data/data/share/aapt_ros/'
    for folder in ('launch', 'config', 'models/default'):
        for path in (p for p in (REPO / folder).rglob('*') if p.is_file()):
            assert data + str(path.relative_to(REPO)) in names
    assert any(n.startswith('aapt_ros/data/samples/sim_episode/') and n.endswith('.mcap') for n in names)


def test_wheel_declares_the_console_entry_points(wheel: zipfile.ZipFile) -> None:
    entry_points = next(n for n in wheel.namelist() if n.endswith('entry_points.txt'))
    text = wheel.read(entry_points).decode()
    for script in ('generator_node = aapt_ros.node.generator_node:main', 'aapt-demo = aapt_ros.eval.demo:main'):
        assert script in text


def test_package_xml_is_format_3_with_a_valid_maintainer_and_license() -> None:
    root = ET.parse(REPO / 'package.xml').getroot()
    assert root.get('format') == '3' and root.findtext('name') == 'aapt_ros'
    assert root.findtext('version') == re.search(r"version='([\d.]+)'", (REPO / 'setup.py').read_text()).group(1)  # type: ignore[union-attr]
    email = root.find('maintainer').get('email')  # type: ignore[union-attr]
    assert re.fullmatch(r'[\w.+-]+@[\w-]+(\.[\w-]+)+', email or '')
    assert root.findtext('license')


def test_package_xml_declares_every_ros_package_the_code_imports() -> None:
    root = ET.parse(REPO / 'package.xml').getroot()
    declared = {e.text for e in root if e.tag in ('depend', 'exec_depend', 'build_depend')}
    imported = set()
    for path in (REPO / 'aapt_ros').rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split('.')[0])
            elif isinstance(node, ast.Import):
                imported |= {alias.name.split('.')[0] for alias in node.names}
    ros_imports = imported & ROS_PACKAGES_IN_PIP
    assert ros_imports <= declared, ros_imports - declared
    setup = (REPO / 'setup.py').read_text()
    for name in ros_imports:  # and the pip extra installs them
        assert f"'{name.replace('_', '-')}'" in setup or name == 'rclpy', name
