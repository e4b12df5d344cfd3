"""The Keras import (`export --keras-model`): a user's .keras, .h5 or SavedModel read, checked, rebuilt in
tf_keras and proven equal to the file, in place of the model the pipeline trains."""
