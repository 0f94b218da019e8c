"""Launch generator_node, a generative camera, with its parameters file.

Example::

    ros2 launch aapt_ros generator.launch.py namespace:=front_camera device:=cuda use_sim_time:=true \
        pose_topic:=/robot/camera_pose joint_states_topic:=/robot/joint_states

Images appear on /<namespace>/image_raw and /<namespace>/camera_info.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument(
            'model',
            default_value='',
            description='Checkpoint folder (config.yaml + safetensors); empty: the shipped default model',
        ),
        DeclareLaunchArgument('device', default_value='auto', description='cpu, cuda, cuda:N or auto'),
        DeclareLaunchArgument('namespace', default_value='camera', description='Namespace of the node and its topics'),
        DeclareLaunchArgument('use_sim_time', default_value='false', description='Stamp images with /clock time'),
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution([FindPackageShare('aapt_ros'), 'config', 'generator.yaml']),
            description='Parameters file of generator_node',
        ),
        DeclareLaunchArgument('pose_topic', default_value='pose', description='geometry_msgs/PoseStamped camera pose'),
        DeclareLaunchArgument(
            'joint_states_topic',
            default_value='joint_states',
            description='sensor_msgs/JointState actions (action_source joint_state)',
        ),
        DeclareLaunchArgument(
            'cmd_vel_topic',
            default_value='cmd_vel',
            description='Twist/TwistStamped actions (action_source twist or twist_stamped)',
        ),
    ]
    generator = Node(
        package='aapt_ros',
        executable='generator_node',
        name='generator_node',
        namespace=LaunchConfiguration('namespace'),
        parameters=[
            LaunchConfiguration('params_file'),
            {
                'model_path': LaunchConfiguration('model'),
                'device': LaunchConfiguration('device'),
                'use_sim_time': ParameterValue(LaunchConfiguration('use_sim_time'), value_type=bool),
            },
        ],
        remappings=[
            ('pose', LaunchConfiguration('pose_topic')),
            ('joint_states', LaunchConfiguration('joint_states_topic')),
            ('cmd_vel', LaunchConfiguration('cmd_vel_topic')),
        ],
        output='screen',
        emulate_tty=True,
    )
    return LaunchDescription([*arguments, generator])
