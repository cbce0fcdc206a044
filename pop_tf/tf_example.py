"""`tf.train.Example` message classes built from protobuf alone, without importing TensorFlow.

Beam workers only need to build and read Examples, but `import tensorflow` costs each worker
process about 3.5 s (more than the whole per-image work of a small bundle), and every worker of
a multi-process or cluster runner pays it. These classes come from the same schema as
`tensorflow/core/example/{example,feature}.proto`, so their bytes are wire-compatible with
`tf.train.Example` and `tf.io.parse_example` (tested in tests/test_records.py). They live in a
private descriptor pool, so they never clash with TensorFlow's own registration.
"""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_PACKAGE = "pop_tf.tensorflow_example"
_LABEL_REPEATED = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
_LABEL_OPTIONAL = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
_TYPE = descriptor_pb2.FieldDescriptorProto


def _message(file_proto, name, fields, oneof=None):
    message = file_proto.message_type.add(name=name)
    if oneof:
        message.oneof_decl.add(name=oneof)
    for field_name, number, field_type, label, type_name in fields:
        field = message.field.add(name=field_name, number=number, type=field_type, label=label)
        if type_name:
            field.type_name = f".{_PACKAGE}.{type_name}"
        if oneof:
            field.oneof_index = 0
        if field_type in (_TYPE.TYPE_FLOAT, _TYPE.TYPE_INT64) and label == _LABEL_REPEATED:
            field.options.packed = True  # as in feature.proto (proto3 default)
    return message


def _build():
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="pop_tf/tensorflow_example.proto", package=_PACKAGE, syntax="proto3")
    _message(file_proto, "BytesList", [("value", 1, _TYPE.TYPE_BYTES, _LABEL_REPEATED, None)])
    _message(file_proto, "FloatList", [("value", 1, _TYPE.TYPE_FLOAT, _LABEL_REPEATED, None)])
    _message(file_proto, "Int64List", [("value", 1, _TYPE.TYPE_INT64, _LABEL_REPEATED, None)])
    _message(file_proto, "Feature", [
        ("bytes_list", 1, _TYPE.TYPE_MESSAGE, _LABEL_OPTIONAL, "BytesList"),
        ("float_list", 2, _TYPE.TYPE_MESSAGE, _LABEL_OPTIONAL, "FloatList"),
        ("int64_list", 3, _TYPE.TYPE_MESSAGE, _LABEL_OPTIONAL, "Int64List"),
    ], oneof="kind")
    features = _message(file_proto, "Features", [
        ("feature", 1, _TYPE.TYPE_MESSAGE, _LABEL_REPEATED, "Features.FeatureEntry")])
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=_TYPE.TYPE_STRING, label=_LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=_TYPE.TYPE_MESSAGE, label=_LABEL_OPTIONAL,
                    type_name=f".{_PACKAGE}.Feature")
    _message(file_proto, "Example", [("features", 1, _TYPE.TYPE_MESSAGE, _LABEL_OPTIONAL, "Features")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
            for name in ("BytesList", "FloatList", "Int64List", "Feature", "Features", "Example")}


_CLASSES = _build()
BytesList = _CLASSES["BytesList"]
FloatList = _CLASSES["FloatList"]
Int64List = _CLASSES["Int64List"]
Feature = _CLASSES["Feature"]
Features = _CLASSES["Features"]
Example = _CLASSES["Example"]
