"""The image history buffer of Shrivastava et al. (2017), as used by CycleGAN's discriminators.

Discriminators see a mix of the newest fakes and fakes from earlier steps, which damps oscillation.
Semantics follow the official `ImagePool.query`, one image at a time: while the pool is not full,
store the image and return it; afterwards, with probability 1/2 return a random stored image and put
the new one in its place, otherwise return the new image.

The state lives in tf.Variables (a checkpoint restores it exactly) and the random choices come
from a stateless seed supplied per call, so the pool is graph-safe and a resumed run draws the
same choices.
"""

from __future__ import annotations

import tensorflow as tf


class ImagePool(tf.Module):
    """A fixed-capacity pool of images of shape `image_shape` (float32).

    Args:
      pool_size: capacity; 0 disables the pool (`query` returns its input).
      image_shape: (H, W, C) of the stored images; training crops are fixed-size.
      name: module name (also scopes the variables).
    """

    def __init__(self, pool_size: int, image_shape: tuple[int, int, int], name: str = "pool"):
        super().__init__(name=name)
        if pool_size < 0:
            raise ValueError(f"pool_size must be >= 0. Received: pool_size={pool_size}")
        self.pool_size = int(pool_size)
        capacity = max(self.pool_size, 1)  # a 0-size variable is legal but pointless to save
        with self.name_scope:
            self.images = tf.Variable(
                tf.zeros((capacity, *image_shape), tf.float32), trainable=False, name="images"
            )
            self.count = tf.Variable(0, dtype=tf.int32, trainable=False, name="count")

    def query(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Returns images for the discriminator and updates the pool.

        Args:
          images: [N, H, W, C] newest fakes (any float dtype; stored as float32).
          seed: int32/int64 [2] stateless seed; the i-th image uses fold_in(seed, i).

        Returns:
          [N, H, W, C] float32, each either the input image or a stored older one.
        """
        images = tf.stop_gradient(tf.cast(images, tf.float32))
        if self.pool_size == 0:
            return images
        seed = tf.cast(seed, tf.int64)
        n = tf.shape(images)[0]

        # Explicit while_loop/cond rather than AutoGraph: the pool must behave the same whether
        # or not the caller's function is converted, and each image sees the state left by the
        # previous one.
        def fill(image):
            self.images.scatter_nd_update([[self.count]], image[None])
            with tf.control_dependencies([self.count.assign_add(1)]):
                return tf.identity(image)

        def swap(image, image_seed):
            slot = tf.random.stateless_uniform(
                [], seed=image_seed[::-1], maxval=self.pool_size, dtype=tf.int32
            )
            old = tf.identity(self.images[slot])
            with tf.control_dependencies([old]):
                update = self.images.scatter_nd_update([[slot]], image[None])
            with tf.control_dependencies([update]):
                return tf.identity(old)

        def choose(image, image_seed):
            u = tf.random.stateless_uniform([], seed=image_seed)
            return tf.cond(u > 0.5, lambda: swap(image, image_seed), lambda: tf.identity(image))

        def body(i, outputs):
            image = images[i]
            image_seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(i, tf.int64))
            chosen = tf.cond(
                self.count < self.pool_size,
                lambda: fill(image),
                lambda: choose(image, image_seed),
            )
            return i + 1, outputs.write(i, chosen)

        _, outputs = tf.while_loop(
            lambda i, _: i < n,
            body,
            (tf.constant(0), tf.TensorArray(tf.float32, size=n)),
            parallel_iterations=1,
        )
        result = outputs.stack()
        result.set_shape(images.shape)
        return result
