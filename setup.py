"""pip installation of aapt_ros (colcon builds with CMakeLists.txt, see package.xml).

A pip install gives the library, the console scripts and, under the environment's prefix, the
ament index entry, ``lib/aapt_ros/<executable>`` and ``share/aapt_ros`` that ``ros2 run`` and
``ros2 launch`` look for (with AMENT_PREFIX_PATH including the environment). The ROS interfaces
in msg/ need colcon; without them the node works with standard messages alone.
"""

from glob import glob

from setuptools import find_packages, setup

ROS_DISTRO = 'kilted'
ROS_PIP_PACKAGES = [  # ROS 2 from pip (Fast DDS); skip this extra where ROS comes from apt
    f'ros-{ROS_DISTRO}-rclpy[fastrtps]',
    *(f'ros-{ROS_DISTRO}-{name}' for name in (
        'std-msgs', 'sensor-msgs', 'geometry-msgs', 'std-srvs', 'diagnostic-msgs', 'rosgraph-msgs',
        'builtin-interfaces', 'rcl-interfaces', 'ament-index-python')),
]
COLCON_PACKAGES = [  # what `colcon build` of the interfaces in msg/ needs on a pip-installed ROS
    'colcon-ros',
    'cmake',  # CMake >= 3.20 even where the system has none
    *(f'ros-{ROS_DISTRO}-{name}' for name in (
        'ament-cmake', 'ament-cmake-python', 'ament-package', 'ament-cmake-include-directories',
        'rosidl-default-generators', 'rosidl-core-generators', 'ament-cmake-ros-core')),
]

setup(
    name='aapt_ros',
    version='0.1.0',
    description='Real-time generative camera for ROS 2: a KV-cached one-pass-per-frame causal video generator (AAPT)',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=['aapt_ros', 'aapt_ros.*']),
    package_data={'aapt_ros': ['data/samples/*/*']},  # the demo trajectory bag
    install_requires=[
        'numpy', 'torch>=2.11', 'safetensors', 'einops', 'pyyaml', 'opencv-python-headless', 'rosbags>=0.11', 'tqdm',
        'matplotlib',
    ],
    extras_require={
        'ros': ROS_PIP_PACKAGES,
        'colcon': COLCON_PACKAGES,
        'sim': ['pybullet'],  # aapt-record-sim renders training scenes on the CPU
        'test': ['pytest', 'pytest-timeout', 'rosbags-image', 'ruff', 'mypy', 'types-PyYAML', 'pybullet'],
    },
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/aapt_ros']),
        ('share/aapt_ros', ['package.xml']),
        ('share/aapt_ros/launch', glob('launch/*.py') + glob('launch/*.xml') + glob('launch/*.yaml')),
        ('share/aapt_ros/config', glob('config/*.yaml')),
        ('share/aapt_ros/config/train_sim', glob('config/train_sim/*.yaml')),
        ('share/aapt_ros/models/default', glob('models/default/*')),
        ('lib/aapt_ros', glob('scripts/*')),
    ],
    entry_points={
        'console_scripts': [
            'generator_node = aapt_ros.node.generator_node:main',
            'aapt-demo = aapt_ros.eval.demo:main',
            'aapt-init-model = aapt_ros.model.init_checkpoint:main',
            'aapt-bench = aapt_ros.eval.bench:main',
            'aapt-eval = aapt_ros.eval.replay:main',
            'aapt-eval-compare = aapt_ros.eval.compare:main',
            'aapt-train-probe = aapt_ros.eval.pose_probe:main',
            'aapt-record-sim = aapt_ros.data.sim_recorder:main',
            'aapt-train = aapt_ros.training.cli:main',
        ],
    },
)
