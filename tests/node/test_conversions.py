from __future__ import annotations

import numpy as np
import pytest
from geometry_msgs.msg import Twist
from sensor_msgs.msg import JointState
from std_msgs.msg import Header

from aapt_ros.model.config import CameraConfig
from aapt_ros.node.conversions import (
    TWIST_FIELDS,
    ActionSource,
    InputError,
    action_from_joint_state,
    action_from_named_vector,
    action_from_twist,
    camera_info_msg,
    check_action_source,
    format_stamp,
)


def test_joint_state_values_are_ordered_by_the_model_names() -> None:
    msg = JointState(name=['b', 'a', 'c'], position=[2.0, 1.0, 3.0], velocity=[0.2, 0.1, 0.3])
    assert action_from_joint_state(msg, ['a', 'b']).tolist() == [1.0, 2.0]
    assert action_from_joint_state(msg, ['c'], field='velocity').tolist() == [0.3]


def test_joint_state_missing_a_joint_is_an_error_that_names_it() -> None:
    with pytest.raises(InputError, match=r"action lacks \['c'\]"):
        action_from_joint_state(JointState(name=['a', 'b'], position=[1.0, 2.0]), ['a', 'c'])


def test_joint_state_with_fewer_values_than_names_is_an_error() -> None:
    with pytest.raises(InputError, match='JointState has 2 names but 0 velocity values'):
        action_from_joint_state(JointState(name=['a', 'b'], position=[1.0, 2.0]), ['a'], field='velocity')


def test_twist_fields_map_to_named_actions() -> None:
    msg = Twist()
    msg.linear.x, msg.angular.z = 0.5, -0.25
    assert action_from_twist(msg, ['angular.z', 'linear.x']).tolist() == [-0.25, 0.5]


@pytest.mark.parametrize(
    ('names', 'values', 'message'),
    [
        (['a', 'b'], [1.0], 'action has 1 values for 2 names'),
        (['a'], [1.0], r'action has 1 values, the model expects 2'),
        (['a', 'x'], [1.0, 2.0], r"action lacks \['b'\]"),
    ],
)
def test_named_vector_errors(names: list[str], values: list[float], message: str) -> None:
    with pytest.raises(InputError, match=message):
        action_from_named_vector(names, values, ['a', 'b'])


@pytest.mark.parametrize('source', list(ActionSource))
def test_action_sources_accept_a_model_whose_actions_they_provide(source: ActionSource) -> None:
    check_action_source(source, TWIST_FIELDS[:2])


@pytest.mark.parametrize('source', [ActionSource.TWIST, ActionSource.TWIST_STAMPED])
def test_twist_sources_refuse_a_joint_model(source: ActionSource) -> None:
    with pytest.raises(InputError, match=f"action_source '{source.value}' provides"):
        check_action_source(source, ['lbr_iiwa_joint_1'])


def test_camera_info_carries_the_training_intrinsics() -> None:
    info = camera_info_msg(CameraConfig(width=160, height=120, fx=100, fy=101, cx=80, cy=60), Header(frame_id='cam'))
    assert (info.width, info.height, info.header.frame_id) == (160, 120, 'cam')
    np.testing.assert_array_equal(np.reshape(info.k, (3, 3)), [[100, 0, 80], [0, 101, 60], [0, 0, 1]])
    np.testing.assert_array_equal(np.reshape(info.p, (3, 4))[:, :3], np.reshape(info.k, (3, 3)))


def test_stamps_format_with_nanoseconds() -> None:
    assert format_stamp(12_000_000_345) == '12.000000345'
